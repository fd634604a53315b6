"""Observation hooks: a profiler hears of every forward and head application of any trace while it observes.

`OBSERVERS` is package-internal: the trace checks it before timing anything, so nobody observing costs one list
check per forward."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Observer = Callable[[str, float], None]
OBSERVERS: list[Observer] = []


@contextmanager
def observe(callback: Observer) -> Iterator[None]:
    """Call `callback(phase, seconds)` after every forward of any trace ("prompt", "latent", "answer": the segment
    kind) and every LM head application ("head") while the block runs: a public hook for profilers, costing one
    list check per forward when nobody observes. Seconds are host wall time (on CUDA, launch time unless the
    callback synchronises). A static answer's step (`StaticAnswer`) runs body and head as one function, which may
    be compiled: it reports one "answer" that includes the head, and no "head"."""
    OBSERVERS.append(callback)
    try:
        yield
    finally:
        OBSERVERS.remove(callback)


def started() -> float:
    """The clock reading to pass to `notify`, read only while someone observes."""
    return time.perf_counter() if OBSERVERS else 0.0


def notify(phase: str, since: float) -> None:
    """Report `phase` as having run since `since` (from `started`) to every observer."""
    if not OBSERVERS:
        return
    seconds = time.perf_counter() - since
    for callback in tuple(OBSERVERS):
        callback(phase, seconds)
