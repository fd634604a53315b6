"""Where one latent_mas rollout and one DiffMAS training step spend their time.

    python -m bench.profile_steps --model smollm2-135m [--batch 4] [--latent-steps 10] [--max-new-tokens 64]

Two passes per scenario:
1. Category timers: the public functions that matter are wrapped (for the duration of the run only, nothing in
   the source changes) with wall-clock timers that keep a call stack, so every category gets its EXCLUSIVE time (a nested
   category is subtracted from its parent). CPU execution is synchronous, so wall time is the cost. Categories:
   the decoder body split into attention projections (q/k/v/o, LoRA included), the attention kernel, the MLP, the
   KV-cache update (DynamicCache concatenation), HF's 4-D mask building, rotary tables and the rest of the body
   (norms, residuals); the LM head; realign; the trace's own 2-D mask/position/padding bookkeeping; the decode loop
   (sampling, log-softmax, entropy, Python); prompt encoding; the loss; backward; the optimizer. Work done inside
   backward by checkpoint recomputation is labelled "[recompute]".
2. torch.profiler: the top aten ops by self CPU time (operator level, including backward).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.utils.checkpoint

from bench.common import (
    FORMAT,
    Rollout,
    configure_threads,
    diffmas_loss,
    environment,
    load_model,
    make_method,
    questions,
    train_step,
    training_setup,
)
from diffmas.methods import Method, MethodConfig

BACKWARD = "backward (autograd)"


class StackTimer:
    """Exclusive wall time and call counts per label, for nested wrapped calls on one thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.phases: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [label, start, time spent in wrapped children]

    def wrap(self, label: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label
            if label != BACKWARD and any(frame[0] == BACKWARD for frame in self._stack):
                name = f"[recompute] {label}"
            self._stack.append([name, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                name, start, children = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[name] += spent - children
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1][2] += spent

        return timed

    def phase(self, label: str, fn: Callable) -> Callable:
        """Inclusive time of a phase (not a category: phases overlap the categories)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phases[label] += time.perf_counter() - start

        return timed


@contextmanager
def patched(
    timer: StackTimer, method: Method, optimizer: torch.optim.Optimizer | None = None
) -> Iterator[None]:
    """Install the category timers on this method's model and the library functions it calls; undo on exit."""
    import transformers.cache_utils as cache_utils
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import diffmas.methods.base as methods_base
    import diffmas.methods.latent_mas as latent_mas
    import diffmas.methods.text_mas as text_mas
    import diffmas.training.objective as objective
    from diffmas.trace import GrowingLayer, LatentTrace, ModelParts

    undo: list[tuple[Any, str, Any, bool]] = []

    def patch(owner: Any, attr: str, label: str, phase: bool = False) -> None:
        had_own = isinstance(owner, torch.nn.Module) and attr in owner.__dict__
        original = getattr(owner, attr)
        undo.append((owner, attr, owner.__dict__.get(attr) if had_own else original, had_own))
        setattr(owner, attr, (timer.phase if phase else timer.wrap)(label, original))

    parts = ModelParts.of(method.backbone.model)
    body = parts.body
    modeling = sys.modules[type(body).__module__]
    patch(body, "forward", "body: rest (norms, residuals, embedding lookup, glue)")
    patch(modeling, "create_causal_mask", "body: HF 4-D mask build (create_causal_mask)")
    if hasattr(body, "rotary_emb"):
        patch(body.rotary_emb, "forward", "body: rotary cos/sin tables")
    for layer in body.layers:
        attn = layer.self_attn
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            patch(getattr(attn, proj), "forward", "body: attention projections q/k/v/o (incl. LoRA)")
        patch(layer.mlp, "forward", "body: MLP")
    mapping = type(ALL_ATTENTION_FUNCTIONS)._global_mapping
    impl = parts.config._attn_implementation
    if impl in mapping:
        undo.append((mapping, impl, mapping[impl], False))
        mapping[impl] = timer.wrap("body: attention kernel (sdpa, GQA handling)", mapping[impl])
    patch(cache_utils.DynamicLayer, "update", "body: KV cache update (torch.cat growth)")
    patch(GrowingLayer, "update", "body: KV cache update (the trace's preallocated store)")
    patch(parts.head, "forward", "LM head")
    if method.takes_latents:
        patch(method.realigner, "forward", "realign")
    for attr in ("append_tokens", "append_step", "append_embeds", "latent_steps"):  # all the trace's forwards
        patch(LatentTrace, attr, "trace: 2-D mask cat, positions, padding, segments")
    # the trace looks torch's checkpoint up at each checkpointed forward: the past-chunk concat runs inside it
    patch(torch.utils.checkpoint, "checkpoint", "trace: checkpoint wrapper (past-chunk concat)")
    patch(methods_base, "decode", "decode loop: log-softmax, entropy, argmax/sampling, Python")
    patch(text_mas, "decode", "decode loop: log-softmax, entropy, argmax/sampling, Python")
    patch(methods_base.Method, "encode", "prompt encoding (chat template, tokenizer)")
    patch(objective, "solver_loss", "loss: target gather + cross-entropy")
    patch(torch.Tensor, "backward", BACKWARD)
    if optimizer is not None:
        patch(optimizer, "step", "optimizer step (AdamW)")
    patch(latent_mas, "build_latent_trace", "phase: build the latent trace (upstream agents)", phase=True)
    patch(methods_base.Method, "decode_solver", "phase: Solver decoding", phase=True)
    try:
        yield
    finally:
        for owner, attr, original, had_own in reversed(undo):
            if isinstance(owner, dict):
                owner[attr] = original
            elif isinstance(owner, torch.nn.Module) and not had_own:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def categorised(
    run: Callable[[], object], method: Method, optimizer=None, repeats: int = 1
) -> dict[str, Any]:
    timer = StackTimer()
    with patched(timer, method, optimizer):
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        wall = time.perf_counter() - start
    return {
        "wall": wall,
        "seconds": dict(timer.seconds),
        "calls": dict(timer.calls),
        "phases": dict(timer.phases),
    }


def print_categories(title: str, found: dict[str, Any], repeats: int) -> None:
    wall = found["wall"]
    rows = sorted(found["seconds"].items(), key=lambda kv: -kv[1])
    accounted = sum(found["seconds"].values())
    print(f"\n### {title}: {wall / repeats:.3f} s per run (mean of {repeats})\n")
    print("| category | s/run | share | calls/run | ms/call |")
    print("|---|---:|---:|---:|---:|")
    for name, secs in rows:
        calls = found["calls"][name]
        print(
            f"| {name} | {secs / repeats:.3f} | {secs / wall:.1%} | {calls / repeats:.0f} | {1e3 * secs / calls:.2f} |"
        )
    other = wall - accounted
    print(f"| other (driver Python, not wrapped) | {other / repeats:.3f} | {other / wall:.1%} | | |")
    for name, secs in found["phases"].items():
        print(f"| _{name}_ (inclusive) | {secs / repeats:.3f} | {secs / wall:.1%} | | |")


def op_table(run: Callable[[], object], rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_steps", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--what", choices=("rollout", "train", "both"), default="both")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--latent-steps", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--checkpoint", action="store_true", help="profile the training step with checkpointing")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ops", type=int, default=15, help="rows of the torch.profiler op table (0: skip it)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    configure_threads(args.threads)
    env = environment()
    print(f"# profile on {args.model}: {env}")
    qs = questions(args.batch)
    if args.what in ("rollout", "both"):
        backbone = load_model(args.model)
        config = MethodConfig(latent_steps=args.latent_steps, max_new_tokens=args.max_new_tokens)
        method = make_method("latent_mas", backbone, config)
        method.stop_ids = set()  # a fixed answer length, so runs are comparable
        run = Rollout(method, qs)
        run()  # warm-up
        title = (
            f"latent_mas rollout, batch {args.batch}, {args.latent_steps} latent steps x 3 agents, "
            f"{args.max_new_tokens} answer tokens"
        )
        print_categories(title, categorised(run, method, repeats=args.repeats), args.repeats)
        if args.ops:
            print(f"\ntop ops (torch.profiler), {title}\n```\n{op_table(run, args.ops)}```")
    if args.what in ("train", "both"):
        setup = training_setup(args.model, args.batch, args.latent_steps, checkpoint=args.checkpoint)

        def step() -> None:
            train_step(setup, diffmas_loss)

        step()  # warm-up
        title = (
            f"DiffMAS training step (grad full{', checkpointing' if args.checkpoint else ''}), batch {args.batch}, "
            f"{args.latent_steps} latent steps x 3 agents"
        )
        found = categorised(step, setup.method, setup.optimizer, repeats=args.repeats)
        print_categories(title, found, args.repeats)
        if args.ops:
            print(f"\ntop ops (torch.profiler), {title}\n```\n{op_table(step, args.ops)}```")
    print(f"\n(formatting: {FORMAT!r}; questions: bench.common.QUESTIONS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
