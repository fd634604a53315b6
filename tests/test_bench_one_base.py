"""`bench/one_base.py` measures what it says: live parameter memory of a compare ladder on the tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import one_base  # noqa: E402


def test_one_base_bench_sees_one_copy_of_the_weights():
    r = one_base.child("tiny")
    assert r["weights"] > 0 and r["peak_rss"] >= r["rss_after_load"] > 0
    # the weights plus LoRA, never a second copy
    assert r["weights"] <= r["max_parameter_bytes"] < 1.5 * r["weights"]
