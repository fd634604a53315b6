"""The trace's cache layers: subclasses of transformers' `DynamicLayer` and the caches built from them.

Every construction of a transformers cache for a trace happens here (`new_cache`, `step_cache`); the static
answer's `StaticCache` is built in `static.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def gather_columns(states: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Columns `order` [B, n] of each row of keys or values [B, heads, T, d]: [B, heads, n, d]."""
    index = order[:, None, :, None].expand(*states.shape[:2], order.shape[1], states.shape[-1])
    return states.gather(2, index)


class GrowingLayer(DynamicLayer):
    """A cache layer that appends into preallocated storage (capacity doubles) while no gradient is recorded.

    DynamicLayer concatenates the whole cache at every step: O(T) copying per decoded token, O(T^2) per answer,
    about 9% of a SmolLM2 rollout. Under autograd this layer switches, for good, to plain concatenation: an in-place
    write into storage that a saved tensor views would invalidate the graph. The store may hold more rows than the
    cache (after `batch_select_indices` compacted it in place): `keys` is always `store[:rows, :, :held]`.

    `capacity` (columns) sizes the first store when the caller knows the trace's final length (prompt + latents +
    `max_new_tokens`): a decode then allocates once, and exactly what it needs rather than up to twice that.
    `allocations` counts this layer's stores (the first one and every regrow); `store_allocations` counts the
    stores of every layer in this process (keys and values apart), for benchmarks.
    """

    store_allocations: ClassVar[int] = 0
    # DynamicLayer's, None until the first update; every method below runs after it (the trace appends first)
    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, capacity: int = 0) -> None:
        super().__init__()
        self.capacity = capacity
        self.allocations = 0
        self._key_store: torch.Tensor | None = None
        self._value_store: torch.Tensor | None = None
        self._concatenating = False

    def reserve(self, columns: int) -> None:
        """Make room for `columns` columns in all (one regrow now instead of doublings later); before the first
        update it only raises the capacity hint. Nothing to do under autograd, which concatenates."""
        self.capacity = max(self.capacity, columns)
        key_store, value_store = self._key_store, self._value_store
        if key_store is None or value_store is None or self._concatenating or columns <= key_store.shape[-2]:
            return
        held = self.keys.shape[-2] if self.keys.numel() else 0
        rows = self.keys.shape[0] if self.keys.numel() else 0
        if not self._is_prefix_of_store(rows):
            return
        self._key_store = key_store = self._grow(key_store[:, :, :held], key_store, held, held, columns)
        self._value_store = value_store = self._grow(
            value_store[:, :, :held], value_store, held, held, columns
        )
        self.allocations += 1
        self.keys = key_store[:rows, :, :held]
        self.values = value_store[:rows, :, :held]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_store = None
        self._value_store = None
        self._concatenating = False

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._concatenating or torch.is_grad_enabled():
            self._concatenating, self._key_store, self._value_store = True, None, None
            return super().update(key_states, value_states, *args, **kwargs)
        held = self.keys.shape[-2] if self.keys.numel() else 0
        need, rows = held + key_states.shape[-2], key_states.shape[0]
        key_store, value_store = self._key_store, self._value_store
        if (
            key_store is None
            or value_store is None
            or need > key_store.shape[-2]
            or not self._is_prefix_of_store(rows)
        ):
            self._key_store = key_store = self._grow(self.keys, key_states, held, need, self.capacity)
            self._value_store = value_store = self._grow(self.values, value_states, held, need, self.capacity)
            self.allocations += 1
        key_store[:rows, :, held:need].copy_(key_states)
        value_store[:rows, :, held:need].copy_(value_states)
        self.keys = key_store[:rows, :, :need]
        self.values = value_store[:rows, :, :need]
        return self.keys, self.values

    def _edits_in_place(self, rows: int) -> bool:
        """Whether an edit may write over this layer's own store: it has one holding the live rows as a prefix, and
        nothing concatenates (no autograd, no concatenating mode)."""
        return not self._concatenating and not torch.is_grad_enabled() and self._is_prefix_of_store(rows)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` by moving them to the front of the store in place: no new store, no regrow later.

        Ascending indices (what decoding passes) move row by row without a temporary; any other order copies the
        kept rows' live columns once. Under autograd (or without a store) it is DynamicLayer's index_select."""
        rows = self.keys.shape[0] if self.keys.numel() else 0
        key_store, value_store = self._key_store, self._value_store
        if key_store is None or value_store is None or not self._edits_in_place(rows):
            super().batch_select_indices(indices)
            return
        held, picked = self.keys.shape[-2], indices.tolist()
        for store in (key_store, value_store):
            live = store[:, :, :held]
            if all(a < b for a, b in zip(picked, picked[1:])):
                for j, i in enumerate(picked):
                    if i != j:
                        live[j].copy_(live[i])
            else:
                live[: len(picked)].copy_(live.index_select(0, indices.to(store.device)))
        self.keys = key_store[: len(picked), :, :held]
        self.values = value_store[: len(picked), :, :held]

    def compact_columns(self, order: torch.Tensor) -> None:
        """Keep columns `order` [rows, n] of each row (ascending: slot k takes a column >= k), written over the
        front of the store: no new store (`LatentTrace.compact`). Without a store of its own, a gathered copy."""
        rows = self.keys.shape[0]
        key_store, value_store = self._key_store, self._value_store
        if key_store is None or value_store is None or not self._edits_in_place(rows):
            self.keys, self.values = gather_columns(self.keys, order), gather_columns(self.values, order)
            return
        n = order.shape[1]
        for store, live in ((key_store, self.keys), (value_store, self.values)):
            store[:rows, :, :n].copy_(gather_columns(live, order))  # one layer's temporary
        self.keys = key_store[:rows, :, :n]
        self.values = value_store[:rows, :, :n]

    def _is_prefix_of_store(self, rows: int) -> bool:
        """False after an outside edit (crop, another batch selection) replaced `keys` with a tensor of its own."""
        store = self._key_store
        if store is None or rows > store.shape[0]:
            return False
        if self.keys.numel() == 0:
            return True
        return (
            self.keys.data_ptr() == store.data_ptr()
            and self.keys.shape[0] == rows
            and self.keys.shape[1] == store.shape[1]
            and self.keys.stride() == store.stride()
        )

    @staticmethod
    def _grow(
        held_states: torch.Tensor, new: torch.Tensor, held: int, need: int, capacity: int = 0
    ) -> torch.Tensor:
        """A store for `need` columns: `capacity` when it is enough (the caller's final length), else double."""
        GrowingLayer.store_allocations += 1
        shape = list(new.shape)
        shape[-2] = capacity if capacity >= need else max(2 * need, 64)
        store = new.new_empty(shape)
        if held:
            store[..., :held, :].copy_(held_states)
        return store


class StepLayer(DynamicLayer):
    """The cache layer of one checkpointed forward: attention reads the past chunks and the new columns in one
    concatenation, and the new columns are kept apart. The step returns them as they are, where slicing them out
    of the concatenation would keep a copy of the whole past and give it a full-width gradient of zeros."""

    def __init__(self, past_keys: Sequence[torch.Tensor], past_values: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self._past = (list(past_keys), list(past_values))
        self._past_len = sum(int(k.shape[-2]) for k in past_keys)
        self.new_keys: torch.Tensor | None = None
        self.new_values: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.new_keys is not None:
            raise RuntimeError("a step layer takes one update: the step's own columns")
        self.new_keys, self.new_values = key_states, value_states
        keys, values = self._past
        self.keys = torch.cat([*keys, key_states], dim=-2) if keys else key_states
        self.values = torch.cat([*values, value_states], dim=-2) if values else value_states
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._past_len + (int(self.new_keys.shape[-2]) if self.new_keys is not None else 0)


def new_cache(
    config: Any, data: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, capacity: int = 0
) -> DynamicCache:
    """A DynamicCache of `GrowingLayer`s, sliding-window layers included.

    A sliding layer of transformers keeps only its last `window` columns, so column c of the trace is not column c
    of its cache and windows count pad columns. Here every layer keeps every column (more memory for long traces
    of sliding models) and the window is applied by the trace's masks, on real-token positions."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(capacity) for _ in cache.layers]
    for layer, (keys, values) in zip(cache.layers, data or []):
        layer.update(keys, values)
    return cache


def step_cache(config: Any, chunks: Sequence[Sequence[torch.Tensor]]) -> DynamicCache:
    """The cache of one checkpointed forward: a `StepLayer` per layer over the past `chunks`, each chunk a flat
    [k0, v0, k1, v1, ...] of one earlier forward's columns (every column, sliding layers too)."""
    cache = DynamicCache(config=config)
    n_layers = len(cache.layers)
    cache.layers = [
        StepLayer([chunk[2 * li] for chunk in chunks], [chunk[2 * li + 1] for chunk in chunks])
        for li in range(n_layers)
    ]
    return cache


def new_columns(cache: DynamicCache) -> list[torch.Tensor]:
    """The columns a checkpointed forward wrote into its `step_cache`, flat [k0, v0, k1, v1, ...]."""
    return [t for layer in cache.layers for t in (layer.new_keys, layer.new_values)]
