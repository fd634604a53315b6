"""B3: one DiffMAS training step (`grad_mode: full`, 4 agents, 10 latent steps) vs a plain LoRA step over one
ordinary sequence of the same token count, same batch. Target: at most 1.5x.

Both steps use the trainer's pieces (`add_lora`: r=8, alpha=16 on q/k/v/o; the target-only CE of
`diffmas.training.objective.solver_loss`; AdamW) and differ only in what precedes the Solver's target: the latent
trace (3 upstream prompts, each followed by its latent steps, all in the graph) or the same number of ordinary
tokens in one forward pass.
"""

from __future__ import annotations

import sys

from bench.common import (
    BenchResult,
    diffmas_loss,
    fmt_times,
    main,
    paired_ratio,
    plain_loss,
    sizes_for,
    time_interleaved,
    train_step,
    training_setup,
)

ID = "B3"
WHAT = (
    "DiffMAS training step (grad full, 4 agents, 10 latent steps) vs plain LoRA step, same tokens and batch"
)


def run(model: str = "tiny", repeats: int | None = None, quick: bool = False) -> BenchResult:
    sizes = sizes_for(model, quick)
    setup = training_setup(model, sizes.batch, sizes.latent_steps)
    info: dict[str, dict] = {}

    def step(name: str, loss_fn):
        def call() -> None:
            info[name] = train_step(setup, loss_fn)

        return call

    variants = {"diffmas": step("diffmas", diffmas_loss), "plain": step("plain", plain_loss)}
    times = time_interleaved(variants, repeats or sizes.repeats)
    ratio = paired_ratio(times["diffmas"], times["plain"])
    lengths = {name: i["tokens_per_sample"] for name, i in info.items()}
    measurements = [
        (
            "sizes",
            f"batch {sizes.batch}, {len(setup.method.roles.roles)} agents, {sizes.latent_steps} latent "
            f"steps/agent, LoRA r=8 on q/k/v/o",
        ),
        (
            "tokens per sample (longest)",
            f"diffmas trace {lengths['diffmas']}, plain sequence {lengths['plain']}",
        ),
        ("diffmas step", fmt_times(times["diffmas"]) + f", loss {info['diffmas']['loss']:.3f}"),
        ("plain step  ", fmt_times(times["plain"]) + f", loss {info['plain']['loss']:.3f}"),
    ]
    if lengths["diffmas"] != lengths["plain"]:
        raise AssertionError(f"token counts differ: {lengths}")
    return BenchResult(
        id=ID,
        what=WHAT,
        ratio=ratio,
        ratio_label="diffmas step / plain LoRA step",
        target="<= 1.5x",
        passed=ratio <= 1.5,
        model=model,
        measurements=measurements,
        quick=quick,
    )


if __name__ == "__main__":
    sys.exit(main(ID, WHAT, run))
