"""Probe: is the item's information in the latent columns for a reader to take? A multinomial logistic regression
per layer on the writers' latent keys (and, apart, values), trained on one split's items and scored on another's,
with the answer as the label; a copy trained on shuffled labels is the control (it must stay near chance, else the
probe memorises). A probe well above chance with the Solver at chance says the reader is the bottleneck."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffmas.diagnostics.common import batches, questions_of
from diffmas.methods import Method, build_latent_trace
from diffmas.tasks.base import Item, Task


@dataclass(frozen=True)
class ProbeRow:
    """One layer's probe: held-out accuracy on the keys and on the values, and the shuffled-label controls."""

    layer: int
    keys: float
    values: float
    keys_shuffled: float
    values_shuffled: float
    # the probe's pick among each test item's options only (None: the items list no options): on a task whose
    # writer sees every option (split_hop), naming the options is not knowing which one is the answer
    keys_options: float | None = None
    values_options: float | None = None


@dataclass(frozen=True)
class ProbeResult:
    rows: list[ProbeRow]
    classes: int  # distinct labels among the training items
    chance: float  # 1 / classes: a uniform guess over the probe's labels
    majority: float  # the most common training label's rate on the test items
    n_train: int
    n_test: int
    option_chance: float | None = None  # a uniform guess among each test item's options (None: no options)


def latent_features(
    method: Method, task: Task, items: Sequence[Item], batch_size: int = 16
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, (keys, values) of every writer's latent columns, one row per item ([N, columns x heads x dim],
    float32 on the CPU), from the trace `latent_mas` builds (no grad)."""
    per_layer: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    for batch in batches(items, batch_size):
        questions, views = questions_of(task, batch)
        with torch.no_grad():
            trace, messages = build_latent_trace(method, questions, task.format_instruction, views=views)
        if not messages or all(m.steps == 0 for m in messages):
            raise ValueError("the trace has no latent columns: use latent steps >= 1 and an upstream agent")
        layers = [trace.column_states(m.start, m.end) for m in messages]
        for li in range(len(layers[0])):
            keys = torch.cat([blocks[li][0] for blocks in layers], dim=2)
            values = torch.cat([blocks[li][1] for blocks in layers], dim=2)
            if len(per_layer) <= li:
                per_layer.append(([], []))
            per_layer[li][0].append(keys.transpose(1, 2).reshape(len(batch), -1).float().cpu())
            per_layer[li][1].append(values.transpose(1, 2).reshape(len(batch), -1).float().cpu())
    return [(torch.cat(k), torch.cat(v)) for k, v in per_layer]


def hit_rate(scores: torch.Tensor, test_y: torch.Tensor, allowed: torch.Tensor | None = None) -> float:
    """Held-out accuracy of a probe's logits ([N, classes]): its best label, or with `allowed` ([N, classes] bool)
    its best among each row's allowed ones (an item's options). A label outside [0, classes) counts as a miss."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return float((scores.argmax(-1) == test_y).float().mean()) if len(test_y) else float("nan")


def probe_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    classes: int,
    *,
    l2: float = 1e-2,
    iterations: int = 100,
) -> torch.Tensor:
    """[N_test, classes]: the logits on the test rows of an L2-regularised multinomial logistic regression
    (features standardised on the training rows, full-batch L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, ts = (train_x - mean) / std, (test_x - mean) / std
    linear = torch.nn.Linear(xs.shape[1], classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xs), train_y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return linear(ts)


def probe_latents(
    method: Method,
    task: Task,
    train_items: Sequence[Item],
    test_items: Sequence[Item],
    *,
    batch_size: int = 16,
    l2: float = 1e-2,
    seed: int = 0,
) -> ProbeResult:
    """A probe per layer on the latent keys and values: does the label (the item's answer) read off linearly?"""
    names = sorted({it.answer for it in train_items})
    index = {a: i for i, a in enumerate(names)}
    train_y = torch.tensor([index[it.answer] for it in train_items])
    test_y = torch.tensor([index.get(it.answer, -1) for it in test_items])
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))]
    options: list[list[str]] = [list(it.meta.get("options") or ()) for it in test_items]
    allowed = None
    if options and all(options):
        allowed = torch.zeros(len(test_items), len(names), dtype=torch.bool)
        for row, opts in enumerate(options):
            for o in opts:
                if o in index:
                    allowed[row, index[o]] = True
    train_f = latent_features(method, task, train_items, batch_size)
    test_f = latent_features(method, task, test_items, batch_size)
    rows = []
    for layer, ((tk, tv), (sk, sv)) in enumerate(zip(train_f, test_f, strict=True)):
        logits = [
            probe_scores(x, y, t, len(names), l2=l2)
            for y in (train_y, shuffled)
            for x, t in ((tk, sk), (tv, sv))
        ]
        keys, values, keys_shuffled, values_shuffled = (hit_rate(s, test_y) for s in logits)
        picks = [hit_rate(s, test_y, allowed) for s in logits[:2]] if allowed is not None else [None, None]
        rows.append(ProbeRow(layer, keys, values, keys_shuffled, values_shuffled, picks[0], picks[1]))
    top = Counter(it.answer for it in train_items).most_common(1)[0][0]
    majority = sum(it.answer == top for it in test_items) / max(1, len(test_items))
    option_chance = sum(1 / len(o) for o in options) / len(options) if allowed is not None else None
    return ProbeResult(
        rows, len(names), 1 / len(names), majority, len(train_items), len(test_items), option_chance
    )
