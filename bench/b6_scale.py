"""B6: the quadratic costs of issue 14 (items 1-3), each measured before and after in one run, as a ratio.

1. stop check: the old loop re-detokenized the whole answer at every step; the new one (`IncrementalText`)
   decodes a bounded window. Timed over one answer's token stream of n tokens (the check alone, no model).
2. checkpointed trace without grad: the old trace took the checkpointed forward under `no_grad` too,
   re-concatenating every earlier chunk at every token; the new one takes the cached path. n decode steps after a
   256-token prompt.
3. keep_rows: the old one replaced each layer's keys by a copy, so the next append regrew the store; the new
   one compacts in place. A batch of 16 with a prompt of n tokens loses one row per step until one is left.

"Before" is the old behaviour reproduced here (a subclass, or transformers' own `batch_select_indices`), so both
variants run in the same process, alternating order each repeat; ratios are medians of per-repeat ratios.

    python -m bench.b6_scale [--model tiny|smollm2-135m] [--lengths 256 1024 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
from contextlib import contextmanager
from functools import partial

import torch
from torch.overrides import TorchFunctionMode
from transformers.cache_utils import DynamicLayer

from bench.common import configure_threads, load_model, paired_ratio, time_interleaved
from diffmas.decoding import IncrementalText
from diffmas.tasks.base import ANSWER_STOPS
from diffmas.trace import GrowingLayer, LatentTrace

STOP = re.compile(ANSWER_STOPS["code"])


def answer_ids(tokenizer, n: int) -> list[int]:
    """n token ids of prose that never closes a code block (the stop check runs to the end)."""
    text = "Let me think about this step by step, and check each case: 12 + 30 = 42, then 42 / 2 = 21. "
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(text)
    return ids[:n]


def stop_before(tokenizer, ids: list[int]) -> None:
    for k in range(1, len(ids) + 1):
        STOP.search(tokenizer.decode(ids[:k], skip_special_tokens=True))


def stop_after(tokenizer, ids: list[int]) -> None:
    text = IncrementalText(tokenizer)
    for i in ids:
        STOP.search(text.add(i))


def _ids(n: int) -> list[int]:
    """n token ids inside the tiny vocabulary (specials and the first bytes left out)."""
    return [5 + i % 250 for i in range(n)]


class CheckpointedWithoutGrad(LatentTrace):
    """Issue 14.2's before: the checkpointed forward taken whether or not a graph is recorded."""

    def _checkpointing(self) -> bool:
        return self.checkpoint


def decode_steps(model, trace_cls: type[LatentTrace], steps: int, prompt: int = 256) -> None:
    """`steps` decode steps after a prompt: the old path's per-step work grows with the steps taken so far."""
    with torch.no_grad():
        trace = trace_cls(model, 2, checkpoint=True)
        trace.append_tokens([_ids(prompt), _ids(prompt // 2)], "s")
        token = torch.tensor([11, 12])
        for _ in range(steps):
            trace.append_step(token, "s")


@contextmanager
def old_keep_rows():
    """Issue 14.3's before: transformers' index_select, a copy whose next append regrows the store."""
    saved = GrowingLayer.batch_select_indices
    GrowingLayer.batch_select_indices = DynamicLayer.batch_select_indices
    try:
        yield
    finally:
        GrowingLayer.batch_select_indices = saved


def shrink_batch(model, width: int, old: bool) -> None:
    rows = 16
    with torch.no_grad(), old_keep_rows() if old else _nothing():
        trace = LatentTrace(model, rows)
        trace.append_tokens([_ids(width)] * rows, "s")
        while trace.batch_size > 1:
            trace.keep_rows(list(range(1, trace.batch_size)))
            trace.append_step(torch.full((trace.batch_size,), 7), "s")


@contextmanager
def _nothing():
    yield


class _CountKVCat(TorchFunctionMode):
    """Adds up the bytes of every 4-D (KV-shaped) tensor `torch.cat` writes, whoever calls it (the trace,
    transformers' DynamicLayer): torch's public function-mode hook, active only inside `with`."""

    def __init__(self, counts: dict[str, int]):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.cat and out.dim() == 4:
            self.counts["cat_bytes"] += out.numel() * out.element_size()
        return out


@contextmanager
def counting_copies(counts: dict[str, int]):
    """Count KV bytes that torch.cat writes (4-D outputs) and store regrows, while the block runs."""
    allocated = GrowingLayer.store_allocations
    try:
        with _CountKVCat(counts):
            yield
    finally:
        counts["regrows"] += GrowingLayer.store_allocations - allocated


def copies(fn) -> dict[str, int]:
    counts = {"cat_bytes": 0, "regrows": 0}
    with counting_copies(counts):
        fn()
    return counts


def report(name: str, n: int, pair: dict, repeats: int, counted: str | None = None) -> None:
    """Time both variants (interleaved) and print the ratio; `counted`: also the copies each one makes."""
    times = time_interleaved(pair, repeats)
    before, after = times["before"], times["after"]
    ratio = paired_ratio(before, after)
    line = f"{name:<34} n={n:<6} before {min(before):8.4f} s  after {min(after):8.4f} s  ratio {ratio:6.1f}x"
    if counted:
        b, a = copies(pair["before"])[counted], copies(pair["after"])[counted]
        line += f"  {counted} before {b:,} after {a:,}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    backbone = load_model(args.model)
    model, tok = backbone.model, backbone.tokenizer
    print(f"B6 on {args.model}, {args.threads} thread(s), repeats {args.repeats}")
    for n in args.lengths:
        ids = answer_ids(tok, n)
        pair = {"before": partial(stop_before, tok, ids), "after": partial(stop_after, tok, ids)}
        report("14.1 stop check per answer", n, pair, args.repeats)
    for n in [min(args.lengths), max(args.lengths) // 4]:
        pair = {
            "before": partial(decode_steps, model, CheckpointedWithoutGrad, n),
            "after": partial(decode_steps, model, LatentTrace, n),
        }
        report("14.2 checkpointed decode, no grad", n, pair, args.repeats, "cat_bytes")
    for width in [min(args.lengths), max(args.lengths) // 4]:
        pair = {
            "before": partial(shrink_batch, model, width, old=True),
            "after": partial(shrink_batch, model, width, old=False),
        }
        report("14.3 keep_rows 16 -> 1 rows", width, pair, args.repeats, "regrows")


if __name__ == "__main__":
    main()
