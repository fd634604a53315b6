"""The trace's own gradient checkpointing: one forward as a pure function of (past key/value chunks, inputs).

transformers turns the cache off under its own checkpointing, so the trace checkpoints at its level: the function
never mutates the live cache and reads the past as the list of per-forward key/value chunks, which every later
step shares, so what a step saves is O(1) new tensors rather than a fresh copy of the whole cache (that would grow
as steps x T)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffmas.trace.layers import new_columns, step_cache
from diffmas.trace.layout import RoleHook
from diffmas.trace.parts import ModelParts


def checkpointed_body(
    parts: ModelParts,
    chunks: Sequence[Sequence[torch.Tensor]],
    role: str,
    role_hook: RoleHook | None,
    full_mask: torch.Tensor | dict[str, torch.Tensor] | None,
    positions: torch.Tensor,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    wanted: tuple[int, ...] = (),
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """Run the body once over the past `chunks` (each a flat [k0, v0, k1, v1, ...] of one earlier forward), saving
    only its inputs when a graph is recorded and recomputing its activations on backward. Returns the final hidden
    states, those of the `wanted` layers, and the new columns (flat [k0, v0, k1, v1, ...])."""
    per_chunk, n_chunks = (len(chunks[0]), len(chunks)) if chunks else (0, 0)
    flat_past = [t for chunk in chunks for t in chunk]

    def step(embeds: torch.Tensor | None, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if role_hook is not None:  # recomputation runs during backward: re-activate this segment's adapter
            role_hook(role)
        cache = step_cache(parts.config, [past[c * per_chunk : (c + 1) * per_chunk] for c in range(n_chunks)])
        out = parts.body(
            input_ids=input_ids,
            inputs_embeds=embeds,
            attention_mask=full_mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=bool(wanted),
            **{parts.cache_kwarg: cache},
        )
        states = [out.hidden_states[i] for i in wanted] if wanted else []
        return (out.last_hidden_state, *states, *new_columns(cache))

    if torch.is_grad_enabled():
        hidden, *rest = checkpoint(step, inputs_embeds, *flat_past, use_reentrant=False)
    else:
        hidden, *rest = step(inputs_embeds, *flat_past)
    return hidden, tuple(rest[: len(wanted)]), list(rest[len(wanted) :])


def refuse_library_checkpointing(model: nn.Module) -> None:
    """Refuse a model with transformers' gradient checkpointing on: it drops the cache of every layer it wraps (with
    a warning only), so a segment appended to a trace would not see the earlier ones."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    checkpointing = (  # transformers 5 renamed it (the old name warns)
        base.is_activation_checkpointing
        if hasattr(type(base), "is_activation_checkpointing")
        else getattr(base, "is_gradient_checkpointing", False)
    )
    if checkpointing:
        raise ValueError(
            f"{type(base).__name__} has transformers' gradient checkpointing enabled, which turns the KV cache "
            "off inside its layers; call model.gradient_checkpointing_disable() and use the trace's own "
            "(`checkpoint=True`, `method.gradient_checkpointing` in training configs)"
        )
