"""B9: what compacting a trace for the Solver's answer removes, on a real task's prompts.

A batch's trace pads every segment to its longest row, so the pads of the upstream prompts and the Solver's add
up; in the `latents` channel the Solver also cannot read the upstream prompts at all. `LatentTrace.compact` (and
the static answer) keep only what the Solver can read. This builds `latent_mas`'s trace for the first `--batch`
test questions of `--task` with the chain `--roles`, appends the Solver's prompt, and prints per channel the
columns per row before and after compaction and the KV bytes the answer's cache holds (with `--new` answer
columns). Counts, not timings: they depend on the tokenizer and the prompts only. One timing beside them:
sizing the trace (`Method.capacity` tokenizes every prompt once more to allocate the cache once) against
building it, to show whether encoding the prompts twice is worth removing.

    python -m bench.b9_compaction [--model smollm2-135m] [--task secret] [--roles comm] [--batch 16]
"""

from __future__ import annotations

import time

import torch

from bench.common import configure_threads, load_model, task_parser
from diffmas.memory import kv_bytes_per_column
from diffmas.methods import MethodConfig, get_method
from diffmas.roles import RoleChain
from diffmas.tasks import get_task
from diffmas.tasks.base import views_of
from diffmas.trace import ModelParts


def layout(
    backbone, task, roles: RoleChain, channel: str, batch: int, steps: int, new: int
) -> dict[str, float]:
    items = task.load("test")[:batch]
    questions = [task.render_question(it) for it in items]
    views = views_of(items)
    method = get_method("latent_mas", backbone, roles, MethodConfig(latent_steps=steps, channel=channel))
    fmt = task.format_instruction
    with torch.no_grad():
        start = time.perf_counter()
        method.capacity(questions, fmt, views)
        sizing = time.perf_counter() - start
        trace, _ = method.build_trace(questions, fmt, views)
        trace.append_tokens(
            method.encode(method.roles.solver, questions, fmt, None, views), method.roles.solver.name
        )
        building = time.perf_counter() - start - sizing
        _, visible, held = trace.readable_layout(method.roles.solver.name)
    per_column = kv_bytes_per_column(ModelParts.of(backbone.model).config, dtype=backbone.model.dtype)
    rows = len(questions)
    return {
        "width": trace.width,
        "real": float(trace.real_lengths.float().mean()),
        "readable": float(visible.sum(dim=1).float().mean()),
        "held": held,
        "kv_before_mib": rows * (trace.width + new) * per_column / 2**20,
        "kv_after_mib": rows * (held + new) * per_column / 2**20,
        "sizing_s": sizing,
        "building_s": building,
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = task_parser(__doc__, task="secret", roles="comm", new=64).parse_args(argv)
    configure_threads(args.threads)
    backbone = load_model(args.model)
    task, roles = get_task(args.task), RoleChain.load(args.roles)
    print(
        f"B9 on {args.model}, task {args.task}, roles {args.roles}, batch {args.batch}, "
        f"{args.latent_steps} latent steps per agent, answer {args.new} columns"
    )
    out = {}
    for channel in ("full", "latents"):
        r = layout(backbone, task, roles, channel, args.batch, args.latent_steps, args.new)
        out[channel] = r
        print(
            f"{channel:<8} trace width {r['width']:>5}  real/row {r['real']:7.1f}  readable by the Solver/row "
            f"{r['readable']:7.1f}  compacted width {r['held']:>5} ({r['held'] / r['width']:.2f}x)  "
            f"answer KV {r['kv_before_mib']:.1f} -> {r['kv_after_mib']:.1f} MiB",
            flush=True,
        )
        print(
            f"{'':<8} sizing the trace (Method.capacity) {r['sizing_s'] * 1e3:.1f} ms, "
            f"{r['sizing_s'] / r['building_s']:.2%} of building it ({r['building_s']:.2f} s)",
            flush=True,
        )
    return out


if __name__ == "__main__":
    main()
