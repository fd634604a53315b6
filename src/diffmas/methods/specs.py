"""The training methods, one spec each: which inference method answers with the adapter, whether it takes latent
steps, and whether its adapter runs for the Solver only.

They live with the inference methods they train (no diffmas imports), so the adapters' manifest reading
(`diffmas.adapters`) and the trainer read them without anything importing up into `diffmas.training`
(`diffmas.training.specs` re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSpec:
    name: str
    eval_method: str  # the inference method that answers with the trained adapter (and builds its trace)
    latent: bool  # takes latent steps (so a realigner is used and `realign: learned` can train)
    solver_only: bool  # the adapter is trained on, and runs for, the Solver alone (upstream stays untrained)
    text_contexts: bool = False  # the Solver reads upstream text, generated once by the untrained agents
    writers: bool = False  # upstream agents write latent steps for the Solver (what per-role adapters and the
    # oracle warm-up act on)


TRAIN_METHODS: dict[str, TrainSpec] = {
    s.name: s
    for s in (
        TrainSpec("diffmas", "latent_mas", latent=True, solver_only=False, writers=True),
        TrainSpec("stitch_mas", "stitch_mas", latent=True, solver_only=False, writers=True),
        TrainSpec("single_latent", "single_latent", latent=True, solver_only=False),
        TrainSpec("single_sft", "single", latent=False, solver_only=True),
        TrainSpec("no_comm_sft", "no_comm", latent=False, solver_only=True),
        TrainSpec("text_mas_sft", "text_mas", latent=False, solver_only=True, text_contexts=True),
    )
}
TRAIN_METHOD_NAMES: tuple[str, ...] = tuple(TRAIN_METHODS)


def train_spec(name: str) -> TrainSpec:
    """The spec of training method `name`; ValueError naming the choices for an unknown one."""
    if name not in TRAIN_METHODS:
        raise ValueError(f"unknown training method {name!r}: choose one of {TRAIN_METHOD_NAMES}")
    return TRAIN_METHODS[name]


__all__ = ["TRAIN_METHODS", "TRAIN_METHOD_NAMES", "TrainSpec", "train_spec"]
