"""B5: peak memory of a DiffMAS training step with gradient checkpointing vs without, at 40 latent steps.
Target: at most 0.5x.

How memory is measured on CPU, and why: torch has no CPU counterpart of `torch.cuda.max_memory_allocated`, and
`tracemalloc` sees only Python objects, not tensor storage. So each variant runs in a FRESH subprocess (a freed
arena of one variant cannot hide the other's growth), which loads the model, builds the LoRA setup, records its
resident set size, resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, VmHWM), runs ONE training step
and reads the peak back. The number compared is the step's peak minus the resident size before it: the memory the
step itself needed (activations, the trace's KV, gradients, optimizer state), without the shared weights. glibc's
mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_) so large tensors are returned to the OS when freed and the RSS
follows live tensor memory, rather than glibc's adaptive threshold keeping freed blocks in the heap.
The children also report the loss and gradient norm: checkpointing must not change either.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import (
    BenchResult,
    diffmas_loss,
    main,
    median,
    mib,
    paired_ratio,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    sizes_for,
    train_step,
    training_setup,
)

ID = "B5"
WHAT = "peak memory of a DiffMAS training step, gradient checkpointing vs none, at 40 latent steps"
ROOT = Path(__file__).resolve().parents[1]
MARK = "B5CHILD "
VARIANTS = ("no checkpointing", "checkpointing")


def child(model: str, steps: int, batch: int, checkpoint: bool, threads: int | None) -> dict:
    """One training step in this (fresh) process; returns its memory and timing."""
    import time

    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    setup = training_setup(model, batch, steps, checkpoint=checkpoint)
    gc.collect()
    before = rss_bytes()
    exact = reset_peak_rss()
    t0 = time.perf_counter()
    info = train_step(setup, diffmas_loss)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    grad_norm = float(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in setup.params if p.grad is not None]))
    )
    return {
        "before": before,
        "peak": peak,
        "step_bytes": peak - before,
        "peak_reset": exact,
        "seconds": seconds,
        "loss": info["loss"],
        "grad_norm": grad_norm,
        "tokens_per_sample": info["tokens_per_sample"],
    }


def spawn(model: str, steps: int, batch: int, checkpoint: bool, threads: int | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [
        sys.executable,
        "-m",
        "bench.b5_memory",
        "--child",
        "--model",
        model,
        "--steps",
        str(steps),
        "--batch",
        str(batch),
    ]
    cmd += ["--checkpoint"] if checkpoint else []
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise RuntimeError(
        f"B5 child failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def run(model: str = "tiny", repeats: int | None = None, quick: bool = False) -> BenchResult:
    """Each variant in its own subprocess, with this process's torch thread count."""
    import torch

    threads = torch.get_num_threads()
    sizes = sizes_for(model, quick)
    repeats = repeats or (1 if quick else 2)
    found: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(repeats):
        for name in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            found[name].append(
                spawn(model, sizes.b5_latent_steps, sizes.batch, name == "checkpointing", threads)
            )
    plain, ckpt = found[VARIANTS[0]], found[VARIANTS[1]]
    ratio = paired_ratio([c["step_bytes"] for c in ckpt], [p["step_bytes"] for p in plain])
    measurements = [
        (
            "sizes",
            f"batch {sizes.batch}, 4 agents, {sizes.b5_latent_steps} latent steps/agent, grad_mode full, "
            f"trace {plain[0]['tokens_per_sample']} tokens/sample",
        ),
        (
            "method",
            "fresh subprocess per variant; step peak RSS (VmHWM after clear_refs) minus RSS before the step"
            + ("" if all(x["peak_reset"] for x in plain + ckpt) else " [peak reset unsupported: ru_maxrss]"),
        ),
    ]
    for name, rows in found.items():
        measurements.append(
            (
                f"{name:16s}",
                f"step memory {mib(median([x['step_bytes'] for x in rows]))} "
                f"[{', '.join(mib(x['step_bytes']) for x in rows)}], process peak {mib(median([x['peak'] for x in rows]))}, "
                f"step {median([x['seconds'] for x in rows]):.2f} s, loss {rows[0]['loss']:.5f}, "
                f"grad norm {rows[0]['grad_norm']:.5f}",
            )
        )
    slower = paired_ratio([c["seconds"] for c in ckpt], [p["seconds"] for p in plain])
    measurements.append(("checkpointed step time / plain step time", f"{slower:.2f}x"))
    return BenchResult(
        id=ID,
        what=WHAT,
        ratio=ratio,
        ratio_label="step memory with / without checkpointing",
        target="<= 0.5x",
        passed=ratio <= 0.5,
        model=model,
        measurements=measurements,
        quick=quick,
    )


def _child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--model", default="tiny")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--checkpoint", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    print(MARK + json.dumps(child(a.model, a.steps, a.batch, a.checkpoint, a.threads)), flush=True)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv[1:]:
        sys.exit(_child_main(sys.argv[1:]))
    sys.exit(main(ID, WHAT, run))
