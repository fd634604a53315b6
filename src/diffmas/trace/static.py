"""The static answer: one agent's answer decoded on transformers' `StaticCache` (fixed shapes, compilable), and
the store of its buffers kept per model for CUDA-graph replay."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

from diffmas.configs import COMPILE_MODES, CompileMode
from diffmas.trace import hooks
from diffmas.trace.layout import RoleHook
from diffmas.trace.masks import step_mask
from diffmas.trace.parts import ModelParts


class AnswerSource(Protocol):
    """What a static answer reads of the trace it is built from (`LatentTrace`), so that this module does not
    depend on the trace's: the layout of the agent's readable columns, then the columns themselves."""

    parts: ModelParts
    window: int | None
    batch_size: int
    device: torch.device
    key_positions: torch.Tensor
    next_positions: torch.Tensor
    role_hook: RoleHook | None

    @property
    def width(self) -> int: ...

    @property
    def kv_layout(self) -> tuple[int, torch.dtype]: ...

    def readable_layout(self, role: str) -> tuple[torch.Tensor, torch.Tensor, int]: ...

    def hand_over(self, order: torch.Tensor, to: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class _StaticStore:
    """The buffers of a static answer, kept for the next answer of the same shape (`StaticAnswer` with
    `reuse_buffers`): CUDA graphs replay on the addresses they were recorded with, and a new address is a new
    recording that every later replay checks first."""

    shape: tuple[Any, ...]
    cache: StaticCache
    visible: torch.Tensor
    key_positions: torch.Tensor
    next_positions: torch.Tensor
    owner: weakref.ref[StaticAnswer] | None = None

    def free(self) -> bool:
        return self.owner is None or self.owner() is None


# model body -> the last reused store: one per model, so at most one answer's KV outlives its answer
_REUSED: weakref.WeakKeyDictionary[nn.Module, _StaticStore] = weakref.WeakKeyDictionary()


def release_static_buffers(model: nn.Module | None = None) -> None:
    """Free the static-answer buffers kept for reuse (for `model`'s body, or every model's)."""
    if model is None:
        _REUSED.clear()
    else:
        _REUSED.pop(ModelParts.of(model).body, None)


class StaticAnswer:
    """One agent's answer decoded on a cache of fixed shape, so that every step can be compiled once.

    Built from a trace after the agent's prompt. Each row's readable columns (real, and in the `latents` channel
    visible to the agent) are copied into transformers' `StaticCache`, compacted to the front: the pads between
    segments, and the columns hidden from the agent, are left out, so the store is `max(readable columns)` +
    `max_new_tokens` wide rather than the trace's width + the answer. Each step writes one column in place and
    attends over the whole store under a mask of fixed shape [B, 1, 1, C] (unwritten columns masked): the shapes
    never change, so `torch.compile` (`compile_mode`; "reduce-overhead" adds CUDA graphs on a GPU) traces the step
    once for the whole answer, and once for every later answer of the same batch size and store width (compiled,
    the width is rounded up to `COMPILE_BUCKET` columns). The batch is fixed too: rows that finish keep decoding,
    read by nobody (rows never attend to each other), where the dynamic loop drops them. Each row's keys keep
    their order and positions, so greedy answers match the dynamic loop's (up to float rounding).

    Needs no grad (the store is written in place) and an SDPA or eager kernel (flash-attention-2 takes no 4-D mask).
    The trace's cache is released layer by layer as it is copied, so the KV is not held twice; the trace is consumed.

    `reuse_buffers` (default: under "reduce-overhead", the CUDA-graph mode) keeps the store for the next answer of
    the same shape on the same model, reset in place, so CUDA graphs replay on the addresses they recorded instead
    of recording anew for every answer. The price: one answer's store stays allocated between answers (at most one
    per model; `release_static_buffers` frees it). A store still read by a live answer is never taken.
    """

    # compiled steps round the store up to a multiple of this many columns: each new shape is a new compile
    # (torch.compile gives up after `recompile_limit`, 8 by default), and answers of one run share a few
    COMPILE_BUCKET: ClassVar[int] = 128

    def __init__(
        self,
        trace: AnswerSource,
        role: str,
        max_new_tokens: int,
        compile_mode: CompileMode | None = None,
        reuse_buffers: bool | None = None,
    ) -> None:
        if torch.is_grad_enabled():
            raise RuntimeError("a static answer writes its cache in place: decode under torch.no_grad()")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES} or None, got {compile_mode!r}")
        parts = trace.parts
        self.kernel = getattr(parts.config, "_attn_implementation", None)
        if self.kernel not in ("sdpa", "eager"):
            raise ValueError(
                f"a static answer passes a 4-D mask, which attn_implementation {self.kernel!r} does not take: "
                "use sdpa or eager, or the dynamic cache"
            )
        if trace.width == 0:
            raise ValueError("a static answer needs the agent's prompt in the trace first")
        self.parts, self.role = parts, role
        self.window = trace.window
        self.per_layer_type = getattr(parts.config, "layer_types", None) is not None
        order, visible, held = trace.readable_layout(role)
        self.capacity = held + max_new_tokens
        if compile_mode is not None:  # a few shapes for every batch of a run, not one compile per batch
            self.capacity = -(-self.capacity // self.COMPILE_BUCKET) * self.COMPILE_BUCKET
        store = self._store(
            trace, compile_mode == "reduce-overhead" if reuse_buffers is None else reuse_buffers
        )
        self.visible, self.key_positions = store.visible, store.key_positions
        self.next_positions, self.cache = store.next_positions, store.cache
        self.visible[:, :held] = visible
        self.key_positions[:, :held] = trace.key_positions.gather(1, order)
        self.next_positions.copy_(trace.next_positions)
        self.column = held  # the next column written
        for (keys, values), target in zip(
            trace.hand_over(order, "a static answer"), self.cache.layers, strict=True
        ):
            target.update(keys, values)  # the trace releases this layer's store as the next one is taken
        if trace.role_hook is not None:
            trace.role_hook(role)  # the agent's adapter, for the whole answer
        # unbound (called with self): a bound method kept on self is a cycle, and the answer (with its store, which
        # the next answer may reuse) would live until the cyclic collector runs instead of until its last use
        column = StaticAnswer._column
        self._forward = torch.compile(column, mode=compile_mode, dynamic=False) if compile_mode else column

    def _store(self, trace: AnswerSource, reuse: bool) -> _StaticStore:
        """Zeroed buffers for this answer: the model's kept store when it has this shape and no live reader,
        else new ones (kept in its place when `reuse`)."""
        n_layers, dtype = trace.kv_layout
        shape = (trace.batch_size, self.capacity, trace.device, dtype, n_layers)
        body = self.parts.body
        kept = _REUSED.get(body) if reuse else None
        if kept is not None and kept.shape == shape and kept.free():
            for layer in kept.cache.layers:
                layer.reset()
            for buffer in (kept.visible, kept.key_positions, kept.next_positions):
                buffer.zero_()
            kept.owner = weakref.ref(self)
            return kept
        if reuse and kept is not None and kept.free():
            del _REUSED[body]  # another shape: free the old store before allocating this one
        visible = torch.zeros((trace.batch_size, self.capacity), dtype=torch.long, device=trace.device)
        cache = StaticCache(config=self.parts.config, max_cache_len=self.capacity)
        cache.layers = [StaticLayer(self.capacity) for _ in range(n_layers)]  # every column, sliding too
        store = _StaticStore(shape, cache, visible, torch.zeros_like(visible), trace.next_positions.clone())
        for buffer in (store.visible, store.key_positions, store.next_positions):
            torch._dynamo.mark_static_address(buffer)  # in-place updates between steps, no cudagraph copy
        if reuse and body not in _REUSED:
            store.owner = weakref.ref(self)
            _REUSED[body] = store
        return store

    @property
    def batch_size(self) -> int:
        return int(self.visible.shape[0])

    def _column(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One column through body and head: the part of a step whose shapes never change."""
        mask = step_mask(
            self.visible,
            self.key_positions,
            positions,
            self.window,
            self.per_layer_type,
            self.kernel,
            self.parts.embed.weight.dtype,
        )
        out = self.parts.body(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self.parts.cache_kwarg: self.cache},
        )
        return self.parts.logits(out.last_hidden_state[:, -1]).float()

    def step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row ([B]) and return the next logits [B, vocab] (float32)."""
        if self.column >= self.capacity:
            raise RuntimeError(f"the static answer is full: {self.capacity} columns")
        started = hooks.started()
        col = self.column
        self.visible[:, col] = 1
        self.key_positions[:, col] = self.next_positions
        logits = self._forward(
            self, token_ids.view(-1, 1).to(self.visible.device), self.next_positions.view(-1, 1).clone()
        )
        self.next_positions.add_(1)
        self.column += 1
        hooks.notify("answer", started)
        return logits
