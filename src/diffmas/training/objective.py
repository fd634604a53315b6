"""The Stage II objective: teacher-forced cross-entropy on the Solver's target tokens only.

The trace is built as at inference (upstream prompts + latent steps, or stitched segments, or nothing), then the
Solver's prompt and its target are appended as one segment (per-segment left padding), or, for long targets
(`target_chunk`), as several segments of bounded width. The LM head runs only at the positions that predict target
tokens, a chunk of them at a time. Prompt, trace and padding carry no loss.

`grad_mode="full"` keeps the whole trace in the graph (the adapters learn to write and to read); `"solver"` builds
the trace under no_grad, so only the Solver's own segment trains.

What can teach the `latents`-only channel (see docs/configs.md, "Teaching the latents channel"): token weights
that lift the tokens differing across items (`answer_weights`), self-distillation from the same model reading the
full channel (`hidden_distill`, `chunked_kl`: CODI, arXiv 2502.21074), and a per-row channel curriculum
(`Batch.visible_rows`, read by the trace's mask).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from diffmas.methods import Method
from diffmas.methods.base import Views
from diffmas.tasks.base import Item, Task
from diffmas.thinking import thinking_target
from diffmas.trace import LatentTrace
from diffmas.training.specs import TRAIN_METHODS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from diffmas.training.config import DistillSection

# training method -> the inference method that answers with its adapter
EVAL_METHOD = {name: spec.eval_method for name, spec in TRAIN_METHODS.items()}
# target positions per head + cross-entropy chunk: the fp32 logits alive at once are HEAD_CHUNK x vocab
HEAD_CHUNK = 1024


def reference_target(task: Task, item: Item, thinking: bool = False) -> str:
    """The item's reference answer written in the format the Solver is asked for. `thinking`: in a thinking
    turn's shape (the worked solution inside `<think>...</think>`, the answer after), as the Solver's prompts are
    in thinking mode (see `diffmas.thinking`)."""
    if task.answer_type == "code":
        code = f"```python\n{item.answer.strip()}\n```"
        return thinking_target("", code) if thinking else code
    boxed = "\\boxed{" + item.answer.strip() + "}"
    final = f"The answer is {boxed}."
    solution = item.meta.get("solution")
    body = ""
    if isinstance(solution, str) and solution.strip():
        body = re.sub(r"\n?####.*$", "", solution.strip(), flags=re.S).strip()
        body = re.sub(r"<<[^>]*>>", "", body)  # GSM8K calculator annotations
    if thinking:
        return thinking_target(body, final)
    return f"{body}\n{final}" if body else final


@dataclass
class Batch:
    """One micro-batch: rendered questions, their target token ids, (text_mas_sft) upstream text contexts, and
    (tasks with per-agent views) each question's views."""

    questions: list[str]
    targets: list[list[int]]
    contexts: list[str] | None = None
    views: list[tuple[str, ...] | None] | None = None
    # per target token: its weight in the loss (None: all 1; see `answer_weights`)
    weights: list[list[float]] | None = None
    # per row: whether its trace keeps the `full` channel (the channel curriculum; None: none does)
    visible_rows: list[bool] | None = None
    # the oracle warm-up (`method.oracle_warmup`): each row's messages (one per upstream writer, in chain order:
    # `diffmas.realign.writer_messages`), and whether its latent slots hold them
    messages: list[list[str]] | None = None
    oracle_rows: list[bool] | None = None
    # what the last loss was made of: sums over target positions (filled by `batch_loss`, for logging)
    terms: dict[str, float] = field(default_factory=dict)


def encode_target(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Target tokens end with the end-of-turn token so the Solver also learns to stop."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.eos_token_id]


def answer_weights(targets: Sequence[Sequence[int]], weight: float) -> list[list[float]]:
    """Per target token: `weight` for the tokens that differ across `targets` (every training target), 1 for the
    prefix and suffix all of them share ("The answer is \\boxed{", "}." and the end of turn), so a one-word
    answer is not outweighed by the template tokens around it. Fixed by the whole training set, never by a
    batch. Returns one list per target, of its length."""
    if not targets:
        return []
    shortest = min(len(t) for t in targets)
    head = 0
    while head < shortest and all(t[head] == targets[0][head] for t in targets):
        head += 1
    tail = 0
    while tail < shortest - head and all(t[-1 - tail] == targets[0][-1 - tail] for t in targets):
        tail += 1
    return [[1.0 if k < head or k >= len(t) - tail else weight for k in range(len(t))] for t in targets]


def build_trace(
    method: Method,
    questions: Sequence[str],
    fmt: str,
    grad_mode: str,
    grad_last: int | None = None,
    views: Views = None,
    visible_rows: Sequence[bool] | None = None,
) -> LatentTrace:
    """The trace the Solver reads, built by the method that answers with the adapter (so training and inference
    build the same trace). `grad_mode="solver"` builds it without grad. `visible_rows`: the rows that keep
    reading every column in the `latents` channel (the curriculum)."""
    context = torch.no_grad() if grad_mode == "solver" else nullcontext()
    before = method.visible_rows
    method.visible_rows = None if visible_rows is None else torch.tensor(list(visible_rows), dtype=torch.bool)
    try:
        with context:
            trace, _ = method.build_trace(questions, fmt, views, grad_last=grad_last)
    finally:
        method.visible_rows = before
    return trace


def split_rows(sequences: Sequence[Sequence[int]], width: int) -> list[list[list[int]]]:
    """Cut every row into the same number of contiguous pieces, each at most `width` tokens: `pieces[k][i]` is row
    i's k-th piece. The trace left-pads each piece as a segment of its own, so rows of different lengths never
    need a piece with no real token (a segment needs one per row); the count is capped by the shortest row, so a
    row much shorter than the longest can make pieces wider than `width`."""
    count = max(1, -(-max(len(s) for s in sequences) // width))
    count = min(count, min(len(s) for s in sequences))
    pieces: list[list[list[int]]] = [[] for _ in range(count)]
    for s in sequences:
        size, extra = divmod(len(s), count)
        start = 0
        for k in range(count):
            end = start + size + (1 if k >= count - extra else 0)
            pieces[k].append(list(s[start:end]))
            start = end
    return pieces


def target_hidden(
    trace: LatentTrace,
    role: str,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    chunk: int | None,
) -> torch.Tensor:
    """Append prompt + target per row and return the hidden states at the positions that predict target tokens
    ([sum of target lengths, d], row by row). `chunk` None: one segment; else segments of at most `chunk` tokens
    (see `split_rows`), each its own forward, checkpointed when the trace checkpoints, so a long target never has
    all its activations alive at once. Positions and masks skip the pads between pieces: the hidden states are the
    one-segment ones up to float rounding."""
    return target_states(trace, role, prompts, targets, chunk)[0]


def target_states(
    trace: LatentTrace,
    role: str,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    chunk: int | None,
    layers: Sequence[int] = (),
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`target_hidden`'s final hidden states [N, d], and those of each of `layers` (hidden-state indices, see
    `LatentTrace.append_tokens`) at the same N positions, each [N, d]."""
    sequences = [list(p) + list(t) for p, t in zip(prompts, targets)]
    pieces = [sequences] if chunk is None else split_rows(sequences, chunk)
    # row i predicts from sequence index len(prompt) - 1 up to its second-to-last token
    first = [len(p) - 1 for p in prompts]
    offsets = [0] * len(sequences)
    picked: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (row of each position, its states)
    for piece in pieces:
        if layers:
            hidden = trace.append_tokens(piece, role, "answer", layers=tuple(layers))
            states = [hidden, *trace.layer_states]
        else:  # the plain call, as before layers existed
            hidden = trace.append_tokens(piece, role, "answer")
            states = [hidden]
        width = hidden.shape[1]
        rows: list[int] = []
        cols: list[int] = []
        for i, tokens in enumerate(piece):
            lo, hi = max(first[i], offsets[i]), min(len(sequences[i]) - 1, offsets[i] + len(tokens))
            rows += [i] * max(0, hi - lo)
            cols += [width - len(tokens) + j - offsets[i] for j in range(lo, hi)]
            offsets[i] += len(tokens)
        index = torch.tensor(rows, dtype=torch.long, device=hidden.device)
        columns = torch.tensor(cols, dtype=torch.long, device=hidden.device)
        picked.append((index, [h[index, columns] for h in states]))
    if len(picked) == 1:
        final, *rest = picked[0][1]
        return final, rest
    # back to row order (each row's positions in sequence order), the order of the labels
    order = torch.sort(torch.cat([rows for rows, _ in picked]), stable=True).indices
    joined = [torch.cat([hs[k] for _, hs in picked])[order] for k in range(len(layers) + 1)]
    return joined[0], joined[1:]


def chunked_cross_entropy(
    trace: LatentTrace,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    chunk: int,
    role: str | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of the trace's logits at `hidden` [N, d] against `labels` [N], `chunk` rows at a time
    (each row's term times `weights` [N] when given).

    The fp32 logits of a long target ([N, vocab]) would dwarf everything else; under grad each chunk runs inside
    `torch.utils.checkpoint`, which keeps only its input, so the backward recomputes one chunk's logits at a time.
    N <= chunk computes the one-chunk loss directly (no recomputation)."""

    def piece(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if w is None:
            return F.cross_entropy(trace.logits(h).float(), y, reduction="sum")
        return (F.cross_entropy(trace.logits(h).float(), y, reduction="none") * w).sum()

    return _chunked(trace, piece, hidden, labels, weights, chunk=chunk, role=role)


def _chunked(
    trace: LatentTrace,
    piece: Callable[..., torch.Tensor],
    hidden: torch.Tensor,
    *rest: Any,
    chunk: int,
    role: str | None,
) -> torch.Tensor:
    """The sum of `piece(h, *r)` over chunks of `chunk` rows of `hidden` [N, d] and of each of `rest` ([N, ...] or
    None); under grad each chunk is checkpointed (its logits recomputed on backward, with `role`'s adapter)."""
    from torch.utils.checkpoint import checkpoint

    def recomputed(*args: Any) -> torch.Tensor:
        if role is not None and trace.role_hook is not None:  # the backward replays it: the Solver's adapter
            trace.role_hook(role)
        return piece(*args)

    if hidden.shape[0] <= chunk:
        return piece(hidden, *rest)
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk):
        args = [hidden[s : s + chunk], *(None if r is None else r[s : s + chunk] for r in rest)]
        if torch.is_grad_enabled():
            total = total + checkpoint(recomputed, *args, use_reentrant=False)
        else:
            total = total + piece(*args)
    return total


def chunked_kl(
    trace: LatentTrace,
    student: torch.Tensor,
    teacher: torch.Tensor,
    chunk: int,
    temperature: float = 1.0,
    role: str | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over N positions of T^2 KL(teacher || student) between the next-token distributions at temperature T
    of the trace's head at `student` [N, d] and at `teacher` [N, d] (the teacher's hidden states, no grad), each
    position's term times `weights` [N] when given. Zero when the two hidden states are equal."""

    def piece(h: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        log_s = F.log_softmax(trace.logits(h).float() / temperature, dim=-1)
        with torch.no_grad():
            log_t = F.log_softmax(trace.logits(t).float() / temperature, dim=-1)
        kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1) * temperature**2
        return (kl * w).sum() if w is not None else kl.sum()

    return _chunked(trace, piece, student, teacher.detach(), weights, chunk=chunk, role=role)


def hidden_distill(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    kind: str = "l1",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """CODI's hidden-state loss: per layer, the mean over d of |s - t| ("l1") or (s - t)^2 ("mse") at each of N
    positions, divided by the teacher's standard deviation over that layer's [N, d] (so layers of different scale
    weigh alike), summed over positions (times `weights` [N]) and averaged over layers. `student`, `teacher`:
    one [N, d] per layer; the teacher carries no grad. Zero when student equals teacher."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        t = t.detach().float()
        gap = (s.float() - t).abs() if kind == "l1" else (s.float() - t) ** 2
        per_position = gap.mean(dim=-1) / t.std().clamp_min(1e-6)
        if weights is not None:
            per_position = per_position * weights
        total = total + per_position.sum()
    return total / len(student)


def solver_loss(
    method: Method,
    trace: LatentTrace,
    batch: Batch,
    fmt: str,
    *,
    target_chunk: int | None = None,
    head_chunk: int = HEAD_CHUNK,
) -> tuple[torch.Tensor, int]:
    """Sum of target-token cross-entropies, and the number of target tokens. `target_chunk`: append the Solver's
    prompt + target in segments of at most this many tokens (None: one segment); `head_chunk`: target positions
    per head + cross-entropy chunk."""
    prompts = method.encode(method.roles.solver, batch.questions, fmt, batch.contexts, batch.views)
    role = method.roles.solver.name
    hidden = target_hidden(trace, role, prompts, batch.targets, target_chunk)
    labels = torch.tensor([t for target in batch.targets for t in target], device=hidden.device)
    loss = chunked_cross_entropy(trace, hidden, labels, head_chunk, role)
    return loss, int(labels.numel())


def full_channel(method: Method) -> Method:
    """The distillation teacher: `method` (same model, adapters, realigner and role hook) reading the `full`
    channel. A shallow copy: nothing of `method` changes."""
    import copy
    from dataclasses import replace

    method.realigner  # noqa: B018 - built once, shared by both
    teacher = copy.copy(method)
    teacher.config = replace(method.config, channel="full")
    teacher.visible_rows = None
    return teacher


def batch_loss(
    method: Method,
    batch: Batch,
    fmt: str,
    grad_mode: str,
    grad_last: int | None = None,
    target_chunk: int | None = None,
    *,
    distill: DistillSection | None = None,
    teacher: Method | None = None,
    head_chunk: int = HEAD_CHUNK,
) -> tuple[torch.Tensor, float]:
    """(loss sum, normaliser) for one micro-batch: the target CE summed over target tokens (each times its
    `batch.weights` entry), plus, with `distill` (a `DistillSection`: weights, layers, kind, temperature) and its
    `teacher` (`full_channel(method)`), the weighted distillation sums. The normaliser is the sum of the token
    weights (the target tokens when unweighted). Each term's sum is left in `batch.terms`."""
    trace = build_trace(method, batch.questions, fmt, grad_mode, grad_last, batch.views, batch.visible_rows)
    prompts = method.encode(method.roles.solver, batch.questions, fmt, batch.contexts, batch.views)
    role = method.roles.solver.name
    layers = list(distill.layers) if distill is not None and distill.weight_hidden > 0 else []
    hidden, states = target_states(trace, role, prompts, batch.targets, target_chunk, layers)
    labels = torch.tensor([t for target in batch.targets for t in target], device=hidden.device)
    weights = None
    if batch.weights is not None:
        weights = torch.tensor([w for row in batch.weights for w in row], device=hidden.device)
    ce = chunked_cross_entropy(trace, hidden, labels, head_chunk, role, weights)
    batch.terms = {"ce": float(ce.detach())}
    loss = ce
    if distill is not None:
        if teacher is None:
            raise ValueError("distillation needs its teacher: full_channel(method)")
        with torch.no_grad():
            t_trace = build_trace(teacher, batch.questions, fmt, "solver", None, batch.views)
            t_hidden, t_states = target_states(t_trace, role, prompts, batch.targets, target_chunk, layers)
        if distill.weight_hidden > 0:
            h = hidden_distill(states, t_states, distill.hidden_loss, weights)
            batch.terms["distill_hidden"] = float(h.detach())
            loss = loss + distill.weight_hidden * h
        if distill.weight_kl > 0:
            kl = chunked_kl(trace, hidden, t_hidden, head_chunk, distill.temperature, role, weights)
            batch.terms["distill_kl"] = float(kl.detach())
            loss = loss + distill.weight_kl * kl
    norm = float(weights.sum()) if weights is not None else float(labels.numel())
    return loss, norm
