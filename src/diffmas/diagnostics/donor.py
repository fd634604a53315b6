"""Latent donor: each item's Solver keeps its own prompts (its own upstream prompts too, in the `full` channel) and
reads another item's latent columns, transplanted into its trace; paired against the same Solver reading its own.

In `full` mode it says whether the latents matter at all (the Solver could read the upstream prompt instead); in
`latents` mode, where the latent columns are all it sees of the writers, it is the donor control. `follows_donor`
is how often the transplanted answer is the donor's answer: a channel that carries the item moves the answer with
its latents. Donors are a seeded derangement within each batch (batches of at least 2 items)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffmas.diagnostics.common import questions_of
from diffmas.methods import Method, build_latent_trace, derangement
from diffmas.stats import McNemar, mcnemar_exact
from diffmas.tasks.base import Item, Task
from diffmas.thinking import answer_text


@dataclass(frozen=True)
class DonorResult:
    real: list[bool]  # each item answered correctly from its own latents
    transplanted: list[bool]  # ... from its donor's latents
    follows_donor: list[bool]  # the transplanted answer is graded correct against the donor item
    donors: list[int]  # each item's donor (index into the items)
    test: McNemar  # real vs transplanted, paired
    chance: float | None

    @property
    def accuracy(self) -> float:
        return sum(self.real) / len(self.real)

    @property
    def transplanted_accuracy(self) -> float:
        return sum(self.transplanted) / len(self.transplanted)

    @property
    def follows_donor_rate(self) -> float:
        return sum(self.follows_donor) / len(self.follows_donor)


def donor_batches(n: int, batch_size: int) -> list[range]:
    """Consecutive batches of `batch_size` items, a last batch of one merged into the one before (a donor needs
    another item in its batch)."""
    if n < 2:
        raise ValueError("the latent donor needs at least 2 items")
    size = max(2, batch_size)
    starts = list(range(0, n, size))
    if n - starts[-1] == 1:
        starts.pop()
    return [range(s, starts[k + 1] if k + 1 < len(starts) else n) for k, s in enumerate(starts)]


def solver_answers(
    method: Method, task: Task, items: Sequence[Item], donors: Sequence[int] | None = None
) -> list[str]:
    """The Solver's answers to `items` (one batch) from the trace `latent_mas` builds; with `donors`, every
    writer's latent columns of row i are first replaced by row donors[i]'s."""
    questions, views = questions_of(task, items)
    fmt = task.format_instruction
    with torch.no_grad():
        trace, messages = build_latent_trace(method, questions, fmt, views=views)
        if donors is not None:
            for m in messages:
                trace.transplant_rows(m.start, m.end, list(donors))
        decoded = method.decode_solver(trace, questions, fmt, views=views)
    return [d.text for d in decoded]


def latent_donor(
    method: Method, task: Task, items: Sequence[Item], *, batch_size: int = 8, seed: int = 0
) -> DonorResult:
    """Grade every item's answer from its own latents and from a donor's (same prompts, same decoding)."""
    real: list[bool] = []
    moved: list[bool] = []
    follows: list[bool] = []
    donor_of: list[int] = []
    for rows in donor_batches(len(items), batch_size):
        batch = [items[i] for i in rows]
        order = derangement(len(batch), f"{seed}\x1f" + "\x1f".join(it.id for it in batch))
        own = solver_answers(method, task, batch)
        other = solver_answers(method, task, batch, order)
        for k, it in enumerate(batch):
            donor = batch[order[k]]
            real.append(bool(task.grade(answer_text(own[k]), it).correct))
            moved.append(bool(task.grade(answer_text(other[k]), it).correct))
            follows.append(bool(task.grade(answer_text(other[k]), donor).correct))
            donor_of.append(rows[order[k]])
    return DonorResult(
        real, moved, follows, donor_of, mcnemar_exact(real, moved), task.chance_rate(list(items))
    )
