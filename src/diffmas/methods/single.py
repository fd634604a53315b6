"""`single`: the Solver prompt alone, decoded as text. The reference every multi-agent method is compared with.

With per-agent views it reads every view: one model that sees everything (the skyline of the communication tasks).
"""

from __future__ import annotations

from diffmas.methods.base import Method


class SingleAgent(Method):
    name = "single"
    sees_all_views = True
