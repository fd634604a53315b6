"""The Stage II objective: teacher-forced cross-entropy on the Solver's target tokens only.

The trace is built as at inference (upstream prompts + latent steps, or stitched segments, or nothing), then the
Solver's prompt and its target are appended as one segment (per-segment left padding), or, for long targets
(`target_chunk`), as several segments of bounded width. The LM head runs only at the positions that predict target
tokens, a chunk of them at a time. Prompt, trace and padding carry no loss.

`grad_mode="full"` keeps the whole trace in the graph (the adapters learn to write and to read); `"solver"` builds
the trace under no_grad, so only the Solver's own segment trains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffmas.methods import Method
from diffmas.tasks.base import Item, Task
from diffmas.thinking import thinking_target
from diffmas.trace import LatentTrace
from diffmas.training.specs import TRAIN_METHODS

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


def encode_target(tokenizer, text: str) -> list[int]:
    """Target tokens end with the end-of-turn token so the Solver also learns to stop."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.eos_token_id]


def build_trace(
    method: Method, questions: Sequence[str], fmt: str, grad_mode: str, grad_last=None, views=None
) -> LatentTrace:
    """The trace the Solver reads, built by the method that answers with the adapter (so training and inference
    build the same trace). `grad_mode="solver"` builds it without grad."""
    context = torch.no_grad() if grad_mode == "solver" else nullcontext()
    with context:
        trace, _ = method.build_trace(questions, fmt, views, grad_last=grad_last)
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
    sequences = [list(p) + list(t) for p, t in zip(prompts, targets)]
    pieces = [sequences] if chunk is None else split_rows(sequences, chunk)
    # row i predicts from sequence index len(prompt) - 1 up to its second-to-last token
    first = [len(p) - 1 for p in prompts]
    offsets = [0] * len(sequences)
    picked: list[tuple[torch.Tensor, torch.Tensor]] = []  # (row of each position, its hidden state)
    for piece in pieces:
        hidden = trace.append_tokens(piece, role, "answer")
        width = hidden.shape[1]
        rows: list[int] = []
        cols: list[int] = []
        for i, tokens in enumerate(piece):
            lo, hi = max(first[i], offsets[i]), min(len(sequences[i]) - 1, offsets[i] + len(tokens))
            rows += [i] * max(0, hi - lo)
            cols += [width - len(tokens) + j - offsets[i] for j in range(lo, hi)]
            offsets[i] += len(tokens)
        index = torch.tensor(rows, dtype=torch.long, device=hidden.device)
        picked.append((index, hidden[index, torch.tensor(cols, dtype=torch.long, device=hidden.device)]))
    if len(picked) == 1:
        return picked[0][1]
    # back to row order (each row's positions in sequence order), the order of the labels
    order = torch.sort(torch.cat([rows for rows, _ in picked]), stable=True).indices
    return torch.cat([h for _, h in picked])[order]


def chunked_cross_entropy(
    trace: LatentTrace, hidden: torch.Tensor, labels: torch.Tensor, chunk: int, role: str | None = None
) -> torch.Tensor:
    """Summed cross-entropy of the trace's logits at `hidden` [N, d] against `labels` [N], `chunk` rows at a time.

    The fp32 logits of a long target ([N, vocab]) would dwarf everything else; under grad each chunk runs inside
    `torch.utils.checkpoint`, which keeps only its input, so the backward recomputes one chunk's logits at a time.
    N <= chunk computes the one-chunk loss directly (no recomputation)."""
    from torch.utils.checkpoint import checkpoint

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(trace.logits(h).float(), y, reduction="sum")

    def recomputed(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if role is not None and trace.role_hook is not None:  # the backward replays it: the Solver's adapter
            trace.role_hook(role)
        return piece(h, y)

    if hidden.shape[0] <= chunk:
        return piece(hidden, labels)
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk):
        h, y = hidden[s : s + chunk], labels[s : s + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(recomputed, h, y, use_reentrant=False)
        else:
            total = total + piece(h, y)
    return total


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


def batch_loss(
    method: Method, batch: Batch, fmt: str, grad_mode: str, grad_last=None, target_chunk: int | None = None
):
    """(sum of target CE, target tokens) for one micro-batch."""
    trace = build_trace(method, batch.questions, fmt, grad_mode, grad_last, batch.views)
    return solver_loss(method, trace, batch, fmt, target_chunk=target_chunk)
