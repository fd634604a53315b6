"""The Stage II objective: teacher-forced cross-entropy on the Solver's target tokens only.

The trace is built as at inference (upstream prompts + latent steps, or stitched segments, or nothing), then the
Solver's prompt and its target are appended as ONE segment (so per-segment left padding still holds), and the LM
head runs only at the positions that predict target tokens. Prompt, trace and padding carry no loss.

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


def solver_loss(method: Method, trace: LatentTrace, batch: Batch, fmt: str) -> tuple[torch.Tensor, int]:
    """Sum of target-token cross-entropies, and the number of target tokens."""
    prompts = method.encode(method.roles.solver, batch.questions, fmt, batch.contexts, batch.views)
    sequences = [p + t for p, t in zip(prompts, batch.targets)]
    hidden = trace.append_tokens(sequences, method.roles.solver.name, "answer")
    width = hidden.shape[1]
    rows, cols, labels = [], [], []
    for i, target in enumerate(batch.targets):
        n = len(target)
        rows += [i] * n
        cols += range(width - n - 1, width - 1)  # position j predicts token j + 1
        labels += target
    device = hidden.device
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    logits = trace.logits(picked).float()
    loss = F.cross_entropy(logits, torch.tensor(labels, device=device), reduction="sum")
    return loss, len(labels)


def batch_loss(method: Method, batch: Batch, fmt: str, grad_mode: str, grad_last=None):
    """(sum of target CE, target tokens) for one micro-batch."""
    trace = build_trace(method, batch.questions, fmt, grad_mode, grad_last, batch.views)
    return solver_loss(method, trace, batch, fmt)
