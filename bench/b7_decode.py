"""B7: our decode loop against transformers' `generate`, both handed the same prefilled trace.

The trace holds an upstream prompt, m latent steps and the Solver's prompt but its last token (left-padded per
segment, so a batch has pads in the middle). `ours` is `diffmas.decoding.decode` appending that last token and
decoding greedily (`sync_every` 1: a readback per step; 8: one per block); `generate` is `model.generate` given
`LatentTrace.generate_inputs` (the cache, the 2-D mask, explicit positions; placeholder ids for the trace's
columns). Both stop a row at the model's stop tokens (ours drops the row, generate pads it until every row is done),
at most `--new` tokens; the greedy tokens must agree exactly (checked before timing), and tokens/s counts the
tokens up to each row's stop. Each variant rebuilds its trace untimed and times the decode only,
interleaved; the ratio is generate's time over ours (> 1: ours is faster), the median of per-repeat ratios.
`ours_*` compacts the trace for the answer where that pays (`LatentTrace.compact`), `uncompacted` (sync 8) keeps
its layout (the loop before compaction); `--mixed` gives a batch pads in both segments that add up, which
compaction removes. `static` is our loop on `trace.StaticAnswer` (a store of fixed shape with each row's KV
compacted; finished rows stay in the batch), `compiled` the same with its step under `torch.compile(mode=
--compile)` (only with --compile: the compile, ~40 s on CPU, is in the untimed warm-up; "reduce-overhead" adds
CUDA graphs on a GPU).

    python -m bench.b7_decode [--model tiny|tiny-qwen2|smollm2-135m] [--batches 1 4] [--new 64] [--repeats 3]
    python -m bench.b7_decode --device cuda --compile reduce-overhead  # on a GPU (scripts/gpu_check.sh)
    python -m bench.b7_decode --reads --batches 1 2 --new 64   # count host reads of one decode instead
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from transformers import GenerationConfig

from bench.common import configure_threads, load_model, paired_ratio, questions
from diffmas.decoding import DecodeConfig, decode, stop_token_ids
from diffmas.realign import build_realigner
from diffmas.trace import LatentTrace

LATENTS = 4


MIXED = False  # --mixed: the upstream prompts in the reverse order of the Solver's


def prefill(backbone, batch: int, realigner) -> tuple[LatentTrace, torch.Tensor]:
    """A trace up to the Solver prompt's last token, and that token per row. With `MIXED` the longest upstream
    prompt meets the shortest Solver prompt, so the pads of the two segments add up (what compaction removes)."""
    tok = backbone.tokenizer
    qs = questions(batch)
    upstream = [tok.encode("Plan: " + q) for q in (qs[::-1] if MIXED else qs)]
    solver = [tok.encode(f"Question {i}: {q} Answer:") for i, q in enumerate(qs)]
    trace = LatentTrace(backbone.model, batch)
    trace.append_tokens(upstream, "planner")
    trace.latent_steps(LATENTS, realigner, "planner")
    trace.append_tokens([s[:-1] for s in solver], "solver")
    return trace, torch.tensor([s[-1] for s in solver])


def ours(
    backbone,
    batch: int,
    new: int,
    realigner,
    sync_every: int,
    static: bool = False,
    compile: str | None = None,
    compact: bool = True,
) -> tuple[list[list[int]], float]:
    trace, last = prefill(backbone, batch, realigner)
    if not compact:  # the loop as it was before compaction: the trace's layout, pads between segments kept
        trace.compact = lambda *args, **kwargs: 0  # type: ignore[method-assign]
    config = DecodeConfig(max_new_tokens=new, static_cache=static, compile=compile)  # type: ignore[arg-type]
    stops = stop_token_ids(backbone.model, backbone.tokenizer)
    start = _clock(trace.device)
    out = decode(
        trace, [[int(t)] for t in last], "solver", backbone.tokenizer, config, stops, sync_every=sync_every
    )
    return [d.token_ids for d in out], _clock(trace.device) - start


def generated(backbone, batch: int, new: int, realigner) -> tuple[list[list[int]], float]:
    trace, last = prefill(backbone, batch, realigner)
    stops = sorted(stop_token_ids(backbone.model, backbone.tokenizer))
    config = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=stops, pad_token_id=stops[0])
    start = _clock(trace.device)
    inputs = trace.generate_inputs(last)
    seqs = backbone.model.generate(**inputs, generation_config=config)
    elapsed = _clock(trace.device) - start
    return [until_stop(row, set(stops)) for row in seqs[:, inputs["input_ids"].shape[1] :].tolist()], elapsed


def until_stop(row: list[int], stops: set[int]) -> list[int]:
    """A generated row up to its first stop token, included (generate pads the rows that finished)."""
    for k, token in enumerate(row):
        if token in stops:
            return row[: k + 1]
    return row


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def kv_columns(backbone, batch: int, new: int, realigner) -> tuple[int, int]:
    """Columns per row of the answer's KV store: the trace's (pads between segments included) and the static
    answer's and the compacted trace's (each row's real columns compacted), both with the answer's `new`."""
    trace, _ = prefill(backbone, batch, realigner)
    return trace.width + 1 + new, int(
        trace.real_lengths.max()
    ) + 1 + new  # the full channel: all real readable


def compare(backbone, batch: int, new: int, repeats: int, compile: str | None = None) -> dict[str, float]:
    """Check that the greedy tokens agree, then time the decodes (the prefill untimed, the variants
    interleaved, the order alternating each repeat); returns tokens/s per variant and the ratios."""
    realigner = build_realigner("norm", backbone.model)
    variants: dict[str, Callable[[], tuple[list[list[int]], float]]] = {
        "uncompacted": lambda: ours(backbone, batch, new, realigner, 8, compact=False),
        "ours_sync1": lambda: ours(backbone, batch, new, realigner, 1),
        "ours_sync8": lambda: ours(backbone, batch, new, realigner, 8),
        "static": lambda: ours(backbone, batch, new, realigner, 8, static=True),
        "generate": lambda: generated(backbone, batch, new, realigner),
    }
    if compile is not None:
        variants["compiled"] = lambda: ours(backbone, batch, new, realigner, 8, compile=compile)
    with torch.no_grad():
        tokens = {name: fn()[0] for name, fn in variants.items()}  # also the warm-up (and the compile)
        agree = all(t == tokens["generate"] for t in tokens.values())
        if not agree:
            raise AssertionError(f"greedy tokens differ at batch {batch}: {tokens}")
        dynamic_kv, static_kv = kv_columns(backbone, batch, new, realigner)
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                times[name].append(variants[name]()[1])
    useful = sum(len(t) for t in tokens["ours_sync1"])  # tokens up to each row's stop
    rates = {name: useful / min(ts) for name, ts in times.items()}
    ours_names = [n for n in variants if n != "generate"]
    ratios = {f"ratio_{n}": paired_ratio(times["generate"], times[n]) for n in ours_names}
    print(
        f"batch {batch:<3} new {new:<4} ({useful:>4} tokens) tokens/s  "
        + "  ".join(f"{n} {rates[n]:8.1f}" for n in variants)
        + "  generate/ours time: "
        + "  ".join(f"{n} {ratios[f'ratio_{n}']:5.2f}x" for n in ours_names)
        + f"  KV columns/row dynamic {dynamic_kv} static {static_kv}  tokens agree: {agree}",
        flush=True,
    )
    return {**rates, **ratios, "kv_dynamic": dynamic_kv, "kv_static": static_kv}


def host_reads(backbone, prompts: list[list[int]], new: int) -> dict[str, int]:
    """Tensor reads back to the host (each a device sync on a GPU) during one greedy decode, by caller: diffmas or
    transformers. Runs on older diffmas too (no `sync_every` there): PYTHONPATH=<old checkout>/src."""
    import inspect
    import sys
    from collections import Counter

    names = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}
    counts: Counter[str] = Counter()

    def counting(name: str):
        real = saved[name]

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            counts["diffmas" if "/diffmas/" in caller else "transformers"] += 1
            return real(self, *args, **kwargs)

        return read

    kwargs = {"sync_every": 8} if "sync_every" in inspect.signature(decode).parameters else {}
    config = DecodeConfig(max_new_tokens=new, stop_pattern=r"never-matches-\d{9}")
    trace = LatentTrace(backbone.model, len(prompts))
    try:
        for n in names:
            setattr(torch.Tensor, n, counting(n))
        with torch.no_grad():
            decode(trace, prompts, "solver", backbone.tokenizer, config, set(), **kwargs)
    finally:
        for n, real in saved.items():
            setattr(torch.Tensor, n, real)
    return {"diffmas": counts["diffmas"], "transformers": counts["transformers"]}


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--reads", action="store_true", help="only count host reads of one decode per batch")
    parser.add_argument(
        "--mixed", action="store_true", help="upstream prompts in the Solver's reverse order (pads add up)"
    )
    parser.add_argument(
        "--compile", default=None, help="also time the static answer compiled in this torch.compile mode"
    )
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    global MIXED
    MIXED = args.mixed
    device = torch.device(args.device)
    backbone = load_model(args.model)
    backbone.model.to(device=device, dtype=getattr(torch, args.dtype))
    kernel = getattr(backbone.model.config, "_attn_implementation", "?")
    print(
        f"B7 on {args.model} ({args.dtype}, {kernel}) on {device}, {args.threads} thread(s), "
        f"{LATENTS} latent steps, repeats {args.repeats}"
    )
    torch.manual_seed(0)
    if args.reads:
        for b in args.batches:
            prompts = [[5, 6, 7, 8][: 4 - i % 2] for i in range(b)]  # batch > 1: pads in the prompt
            print(f"batch {b:<3} new {args.new:<4} host reads {host_reads(backbone, prompts, args.new)}")
        return {}
    return {b: compare(backbone, b, args.new, args.repeats, args.compile) for b in args.batches}


if __name__ == "__main__":
    main()
