"""Writer gradient: with one LoRA adapter per role, how much gradient reaches the writer's adapter (the upstream
roles) beside the reader's (the Solver's). In the `latents` channel the writer's only route to the loss is its latent
columns, so a zero writer norm there means the channel's gradient path is cut.

`adapter_grad_norms` and `writer_reader_grad_norms` read `.grad` only (the trainer logs them every step); this module
imports nothing of `diffmas.training` at import time, so the trainer can import it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

WRITER, READER = "grad_norm_writer", "grad_norm_reader"


def _adapter_of(name: str) -> str | None:
    """The adapter a PEFT LoRA parameter belongs to: `...q_proj.lora_A.<adapter>.weight` -> `<adapter>`."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("lora_"):
            return parts[i + 1]
    return None


def adapter_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """The L2 norm of each LoRA adapter's gradient, by adapter name; a parameter without a gradient, or frozen (the
    writer of `grad_mode: solver` stays at its initialisation), counts as zero: the adapter is listed with 0.0,
    not left out."""
    squares: dict[str, float] = {}
    for name, p in model.named_parameters():
        adapter = _adapter_of(name)
        if adapter is None:
            continue
        g = 0.0 if p.grad is None or not p.requires_grad else float(p.grad.detach().float().pow(2).sum())
        squares[adapter] = squares.get(adapter, 0.0) + g
    return {k: math.sqrt(v) for k, v in squares.items()}


def writer_reader_grad_norms(model: torch.nn.Module, roles: Sequence[str]) -> dict[str, float]:
    """`{grad_norm_writer, grad_norm_reader}`: the gradient norm of every upstream role's adapter together, and of
    the Solver's (`roles` in chain order, the Solver last). Needs per-role adapters."""
    norms = adapter_grad_norms(model)
    missing = [r for r in roles if r not in norms]
    if missing:
        raise ValueError(
            f"no trainable LoRA adapter named {missing} (per-role adapters have: {sorted(norms)})"
        )
    writer = math.sqrt(sum(norms[r] ** 2 for r in roles[:-1]))
    return {WRITER: writer, READER: norms[roles[-1]]}


def writer_gradient(method, task, items, *, grad_mode: str = "full") -> dict[str, float]:
    """One backward of the training objective (answer-token cross-entropy, mean over tokens) on `items` through
    `method`, whose backbone carries per-role adapters (`diffmas.adapters.add_lora(..., "per_role", ...)`): the
    writer's and the reader's gradient norms, and the loss. Gradients are cleared before and after."""
    from diffmas.training.data import encode_targets, make_batch, reference_texts
    from diffmas.training.objective import batch_loss

    model = method.backbone.model
    roles = [r.name for r in method.roles.roles]
    texts = reference_texts(task, items, {})
    kept, targets = encode_targets(method.backbone.tokenizer, list(items), texts, "reference")
    batch = make_batch(task, kept, targets, None)
    model.zero_grad(set_to_none=True)
    loss, n = batch_loss(method, batch, task.format_instruction, grad_mode)
    (loss / n).backward()
    out = {**writer_reader_grad_norms(model, roles), "loss": float(loss.detach()) / n}
    model.zero_grad(set_to_none=True)
    return out
