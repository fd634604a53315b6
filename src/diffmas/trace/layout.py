"""The trace's vocabulary: segments (who wrote which columns), their kinds, the channel modes, the role hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

SegmentKind = Literal["prompt", "latent", "answer"]
ChannelMode = Literal["full", "latents"]
CHANNEL_MODES: tuple[str, ...] = ("full", "latents")
RoleHook = Callable[
    [str], None
]  # called with a role before each of its forwards (it activates the role's adapter)


@dataclass(frozen=True)
class Segment:
    """Columns [start, end) of the trace, written by `role`; `lengths[i]` of them are real for sample i."""

    role: str
    kind: SegmentKind
    start: int
    end: int
    lengths: tuple[int, ...]
    # per row: how many of its first real tokens carry no item information (shown to readers with `show_prefix`)
    prefix: tuple[int, ...] | None = None

    @property
    def width(self) -> int:
        return self.end - self.start
