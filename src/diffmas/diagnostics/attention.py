"""Attention mass: how much of the Solver's attention, at the positions that predict its answer, falls on the
writers' latent columns, per layer (mean over heads, answer positions and items). Beside it: the share a uniform
reader would give them (latent columns / columns it can see), the mass on the first latent column alone (a reader
may use the first column it sees as an attention sink, which carries no item information), and the mass on the
upstream prompts (0 in the `latents` channel) and on the Solver's own prompt and answer.

The answer is the reference target, teacher-forced (as training sees it). Needs the eager attention kernel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffmas.diagnostics.common import batches, questions_of
from diffmas.methods import Method, build_latent_trace
from diffmas.tasks.base import Item, Task


@dataclass(frozen=True)
class LayerMass:
    layer: int
    latent: float  # every latent column
    latent_first: float  # the first writer's first latent column
    upstream_prompt: float  # the upstream agents' prompt columns
    own: float  # the Solver's prompt and answer
    uniform_latent: float  # the latent columns' share of the columns the reader sees


def attention_mass(method: Method, task: Task, items: Sequence[Item], batch_size: int = 8) -> list[LayerMass]:
    """Per layer, the Solver's attention mass at its answer positions (means over items, each a mean over its
    answer positions and the heads)."""
    from diffmas.training.objective import encode_target, reference_target

    tokenizer = method.backbone.tokenizer
    solver = method.roles.solver
    sums: list[torch.Tensor] | None = None  # per layer: [5] sums over items
    for batch in batches(items, batch_size):
        questions, views = questions_of(task, batch)
        fmt = task.format_instruction
        with torch.no_grad():
            trace, messages = build_latent_trace(method, questions, fmt, views=views)
            latent = torch.zeros(trace.width, dtype=torch.bool, device=trace.device)
            for m in messages:
                latent[m.start : m.end] = True
            if not messages or not bool(latent.any()):
                raise ValueError(
                    "the trace has no latent columns: use latent steps >= 1 and an upstream agent"
                )
            upstream = ~latent
            visible_before = trace.visible_mask(solver.name).bool()  # [B, W0]
            prompts = method.encode(solver, questions, fmt, views=views)
            targets = [encode_target(tokenizer, reference_target(task, it)) for it in batch]
            sequences = [list(p) + t for p, t in zip(prompts, targets)]
            _, weights = trace.append_attending(sequences, solver.name)
        width0, chunk = latent.shape[0], max(len(s) for s in sequences)
        first = messages[0].start
        rows = []
        for i, (p, seq) in enumerate(zip(prompts, sequences)):
            # chunk columns of the positions that predict target tokens
            cols = torch.arange(chunk - len(seq) + len(p) - 1, chunk - 1, device=trace.device)
            seen = visible_before[i].sum() + cols - (chunk - len(seq)) + 1  # columns each query sees
            share = (latent & visible_before[i]).sum() / seen
            per_layer = []
            for w in weights:
                a = w[i, :, cols, :].float().mean(0)  # [positions, W] over heads
                per_layer.append(
                    torch.stack(
                        [
                            a[:, :width0][:, latent].sum(-1).mean(),
                            a[:, first].mean(),
                            a[:, :width0][:, upstream & visible_before[i]].sum(-1).mean(),
                            a[:, width0:].sum(-1).mean(),
                            share.float().mean(),
                        ]
                    )
                )
            rows.append(torch.stack(per_layer))  # [layers, 5]
        total = torch.stack(rows).sum(0)
        sums = (
            [total[li] for li in range(total.shape[0])]
            if sums is None
            else [s + total[li] for li, s in enumerate(sums)]
        )
    assert sums is not None
    n = len(items)
    return [
        LayerMass(li, *(float(v) / n for v in s.tolist()))  # type: ignore[arg-type]
        for li, s in enumerate(sums)
    ]
