"""The latent KV trace: one append-only, batched KV cache per question, shared by every agent of a chain.

    [planner prompt | m latents | critic prompt | m latents | refiner prompt | m latents | solver prompt | answer]

Batching is where earlier code broke, so the rules are explicit:
- every appended segment is left-padded on its own, so the last column of a segment is real for every sample and
  "the hidden state of the last real token" is simply the last column;
- a 2-D attention mask over the whole trace marks pad columns (0) wherever they sit;
- explicit `position_ids` run contiguously over each sample's real tokens, skipping pads.
A batch therefore computes what one-at-a-time would, up to float rounding.

Channel modes say what a later agent reads of the trace: `full` (every earlier column: upstream prompts and
latents, the paper's setting) or `latents` (a writer sees its own segments and the *latent* columns of other
roles; other roles' prompt and answer columns are masked out for it). The mask of each forward is narrowed, never
the cache: in `latents` mode the only content path from an upstream prompt to the Solver is the m latent columns.
Positions still count every real column, so with two or more upstream agents the position gap between their
latent blocks tells a reader how long the prompt between them was (a few bits of length, no content; with one
upstream agent there is no such gap). A fixed position budget per prompt would close it; not done yet.

Training may narrow the `latents` channel per row: `visible_rows` [B] marks rows that read as in `full` (a
curriculum from the full channel to the bottleneck); each row's mask is then its own channel's, so a mixed batch
still computes what each row alone would in its channel. `show_prefix` lets readers in `latents` mode see, of other
roles' prompts, only each row's item-independent prefix (the `prefix` tokens a prompt segment was appended with:
system prompt and template tokens before any item text).

A latent step feeds back the final (normed) hidden state, or with `latent_layer` the hidden state after that
block (0: the embeddings; -1: the final state), and `layers=` on `append_tokens` hands back the hidden states of
chosen blocks (`layer_states`), for distillation on intermediate layers.

Nothing here detaches or disables grad: callers decide (`torch.no_grad()` for inference, a graph for training).
All use of the transformers cache API lives in this module.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch
from torch import nn
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer

from diffmas.configs import COMPILE_MODES, CompileMode

SegmentKind = Literal["prompt", "latent", "answer"]
ChannelMode = Literal["full", "latents"]
CHANNEL_MODES: tuple[str, ...] = ("full", "latents")
RoleHook = Callable[[str], None]
Observer = Callable[[str, float], None]
_OBSERVERS: list[Observer] = []


@contextmanager
def observe(callback: Observer) -> Iterator[None]:
    """Call `callback(phase, seconds)` after every forward of any trace ("prompt", "latent", "answer": the segment
    kind) and every LM head application ("head") while the block runs: a public hook for profilers, costing one
    list check per forward when nobody observes. Seconds are host wall time (on CUDA, launch time unless the
    callback synchronises). A static answer's step (`StaticAnswer`) runs body and head as one function, which may
    be compiled: it reports one "answer" that includes the head, and no "head"."""
    _OBSERVERS.append(callback)
    try:
        yield
    finally:
        _OBSERVERS.remove(callback)


def _notify(phase: str, started: float) -> None:
    seconds = time.perf_counter() - started
    for callback in tuple(_OBSERVERS):
        callback(phase, seconds)


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

    def __init__(self, capacity: int = 0) -> None:
        super().__init__()
        self.capacity = capacity
        self.allocations = 0

    def reserve(self, columns: int) -> None:
        """Make room for `columns` columns in all (one regrow now instead of doublings later); before the first
        update it only raises the capacity hint. Nothing to do under autograd, which concatenates."""
        self.capacity = max(self.capacity, columns)
        store = getattr(self, "_key_store", None)
        if store is None or self._concatenating or columns <= store.shape[-2]:
            return
        held = self.keys.shape[-2] if self.keys.numel() else 0
        rows = self.keys.shape[0] if self.keys.numel() else 0
        if not self._is_prefix_of_store(rows):
            return
        self._key_store = self._grow(self._key_store[:, :, :held], self._key_store, held, held, columns)
        self._value_store = self._grow(self._value_store[:, :, :held], self._value_store, held, held, columns)
        self.allocations += 1
        self.keys = self._key_store[:rows, :, :held]
        self.values = self._value_store[:rows, :, :held]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_store: torch.Tensor | None = None
        self._value_store: torch.Tensor | None = None
        self._concatenating = False

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._concatenating or torch.is_grad_enabled():
            self._concatenating, self._key_store, self._value_store = True, None, None
            return super().update(key_states, value_states, *args, **kwargs)
        held = self.keys.shape[-2] if self.keys.numel() else 0
        need, rows = held + key_states.shape[-2], key_states.shape[0]
        store = self._key_store
        if store is None or need > store.shape[-2] or not self._is_prefix_of_store(rows):
            self._key_store = self._grow(self.keys, key_states, held, need, self.capacity)
            self._value_store = self._grow(self.values, value_states, held, need, self.capacity)
            self.allocations += 1
        self._key_store[:rows, :, held:need].copy_(key_states)
        self._value_store[:rows, :, held:need].copy_(value_states)
        self.keys = self._key_store[:rows, :, :need]
        self.values = self._value_store[:rows, :, :need]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` by moving them to the front of the store in place: no new store, no regrow later.

        Ascending indices (what decoding passes) move row by row without a temporary; any other order copies the
        kept rows' live columns once. Under autograd (or without a store) it is DynamicLayer's index_select."""
        rows = self.keys.shape[0] if self.keys.numel() else 0
        if self._concatenating or torch.is_grad_enabled() or not self._is_prefix_of_store(rows):
            super().batch_select_indices(indices)
            return
        held, picked = self.keys.shape[-2], indices.tolist()
        for store in (self._key_store, self._value_store):
            live = store[:, :, :held]
            if all(a < b for a, b in zip(picked, picked[1:])):
                for j, i in enumerate(picked):
                    if i != j:
                        live[j].copy_(live[i])
            else:
                live[: len(picked)].copy_(live.index_select(0, indices.to(store.device)))
        self.keys = self._key_store[: len(picked), :, :held]
        self.values = self._value_store[: len(picked), :, :held]

    def compact_columns(self, order: torch.Tensor) -> None:
        """Keep columns `order` [rows, n] of each row (ascending: slot k takes a column >= k), written over the
        front of the store: no new store (`LatentTrace.compact`). Without a store of its own, a gathered copy."""
        rows = self.keys.shape[0]
        if self._concatenating or torch.is_grad_enabled() or not self._is_prefix_of_store(rows):
            self.keys, self.values = _gather_columns(self.keys, order), _gather_columns(self.values, order)
            return
        n = order.shape[1]
        for store, live in ((self._key_store, self.keys), (self._value_store, self.values)):
            store[:rows, :, :n].copy_(_gather_columns(live, order))  # one layer's temporary
        self.keys = self._key_store[:rows, :, :n]
        self.values = self._value_store[:rows, :, :n]

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
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
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
    config, data: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, capacity: int = 0
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


@dataclass(frozen=True)
class Segment:
    """Columns [start, end) of the trace, written by `role`; `lengths[i]` of them are real for sample i."""

    role: str
    kind: SegmentKind
    start: int
    end: int
    lengths: tuple[int, ...]
    # per row: how many of its first real tokens carry no item information (shown to readers with `show_prefix`)
    prefix: tuple[int, ...] | None = None

    @property
    def width(self) -> int:
        return self.end - self.start


def logit_transform(config) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What a causal LM does to its head's output before returning logits, read from its (text) config.

    The trace runs the head itself, so these must be applied here: Cohere multiplies by `logit_scale`, Granite
    divides by `logits_scaling`, Gemma 2/3 cap with `final_logit_softcapping` (c * tanh(x / c)). None: plain head.
    """
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    model_type = str(getattr(config, "model_type", ""))
    scale = getattr(config, "logit_scale", None)
    if model_type.startswith("cohere") and isinstance(scale, (int, float)):
        steps.append(lambda x: x * scale)
    scaling = getattr(config, "logits_scaling", None)
    if isinstance(scaling, (int, float)) and scaling != 1:
        steps.append(lambda x: x / scaling)
    cap = getattr(config, "final_logit_softcapping", None)
    if isinstance(cap, (int, float)) and cap > 0:
        steps.append(lambda x: torch.tanh(x / cap) * cap)
    if not steps:
        return None

    def apply(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return apply


@dataclass(frozen=True)
class ModelParts:
    """The pieces of a causal LM the trace needs: the decoder body (no head), the head and the input embeddings.

    `config` is the text config (a vision-language model such as Mistral3 nests it); `transform` is what the
    model applies after its head (softcapping, logit scaling), None for a plain linear head.
    """

    body: nn.Module
    head: nn.Module
    embed: nn.Module
    config: object
    cache_kwarg: str
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def of(cls, model: nn.Module) -> ModelParts:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # look through PEFT
        body = base.get_decoder()
        head = base.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(base).__name__} has no LM head; diffmas needs a causal LM")
        params = inspect.signature(body.forward).parameters
        cache_kwarg = "cache" if "cache" in params else "past_key_values"
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        return cls(
            body=body,
            head=head,
            embed=base.get_input_embeddings(),
            config=config,
            cache_kwarg=cache_kwarg,
            transform=logit_transform(config),
        )


def check_head(model: nn.Module, atol: float = 1e-3) -> None:
    """Fail clearly when the trace's logits (body, then head, then `logit_transform`) are not the model's own.

    A family that post-processes logits in a way `logit_transform` does not know would otherwise give silently
    wrong answers and losses; one forward of four tokens at load time catches it.
    """
    parts = ModelParts.of(model)
    vocab = int(parts.head.weight.shape[0])
    ids = torch.arange(1, 5, device=parts.embed.weight.device).clamp_max(vocab - 1).view(1, -1)
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()
        hidden = parts.body(input_ids=ids).last_hidden_state
        got = parts.head(hidden)
        got = (parts.transform(got) if parts.transform is not None else got).float()
    gap = (got - expected).abs().max().item()
    if not gap <= atol * max(1.0, expected.abs().max().item()):
        raise ValueError(
            f"{type(model).__name__} ({getattr(parts.config, 'model_type', '?')}): the trace's logits differ "
            f"from the model's own by {gap:.3g}; its head does something diffmas does not replicate "
            "(see diffmas.trace.logit_transform)"
        )


def sliding_window_of(config) -> int | None:
    """The window of the config's sliding-attention layers, None when no layer slides.

    Configs with `layer_types` name their sliding layers (Gemma 2/3, Qwen2/3 with `use_sliding_window`); Mistral-
    style configs without it slide on every layer when `sliding_window` is set."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return int(window) if "sliding_attention" in types else None
    return None if getattr(config, "use_sliding_window", True) is False else int(window)


def attention_masks(
    visible: torch.Tensor,
    key_positions: torch.Tensor,
    query_positions: torch.Tensor,
    window: int,
    per_layer_type: bool,
    dtype: torch.dtype,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """4-D additive masks [B, 1, Q, K] for a chunk of Q columns appended after K - Q: causal in columns, real and
    visible keys only (`visible` [B, K]), and for sliding layers keys less than `window` positions back.

    Positions count real tokens only, so a batch slides exactly as each question alone would. Masked entries get
    the dtype's minimum, not -inf: a fully masked row (a left pad with no real key yet) gives finite values.
    `per_layer_type`: a {"full_attention", "sliding_attention"} dict for bodies that mix both (they accept one);
    otherwise the sliding mask alone (Mistral-style bodies, where every layer slides)."""
    width, q = visible.shape[1], query_positions.shape[1]
    columns = torch.arange(width, device=visible.device)
    causal = columns.view(1, 1, -1) <= (columns[width - q :]).view(1, -1, 1)
    full = causal & visible.bool().unsqueeze(1)
    near = (query_positions.unsqueeze(2) - key_positions.unsqueeze(1)) < window
    additive = {
        name: torch.zeros(m.shape, dtype=dtype, device=visible.device)
        .masked_fill(~m, torch.finfo(dtype).min)
        .unsqueeze(1)
        for name, m in (("full_attention", full), ("sliding_attention", full & near))
    }
    return additive if per_layer_type else additive["sliding_attention"]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to one width: (ids [B, L], mask [B, L])."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("every sample needs at least one token in a segment")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


class LatentTrace:
    """A batched, append-only KV trace with its 2-D mask, per-sample next positions and segment bookkeeping.

    `last_hidden` is the last layer's hidden state (after the final norm) at the last column: for every sample the
    last real token of the last appended segment.
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        *,
        start_positions: torch.Tensor | None = None,
        role_hook: RoleHook | None = None,
        checkpoint: bool = False,
        channel: ChannelMode = "full",
        capacity: int = 0,
        visible_rows: torch.Tensor | Sequence[bool] | None = None,
        show_prefix: bool = False,
        latent_layer: int | None = None,
    ):
        """`capacity`: the columns the trace will reach, when known (prompt + latents + answer): the cache then
        allocates its storage once (see `GrowingLayer`); 0 lets it double as it grows. `visible_rows` [B]: rows
        that read every column whatever the channel (None: none); `show_prefix`: in `latents` mode, readers also
        see other roles' item-independent prompt prefixes; `latent_layer`: the block whose hidden state a latent
        step feeds back (None: the final one). See the module docstring."""
        if channel not in CHANNEL_MODES:
            raise ValueError(f"channel must be one of {CHANNEL_MODES}, got {channel!r}")
        self.channel = channel
        self.show_prefix = show_prefix
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        checkpointing = (  # transformers 5 renamed it (the old name warns)
            base.is_activation_checkpointing
            if hasattr(type(base), "is_activation_checkpointing")
            else getattr(base, "is_gradient_checkpointing", False)
        )
        if checkpointing:
            # transformers' per-layer checkpointing drops the cache of every layer it wraps (with a warning only),
            # so a segment appended to a trace would not see the earlier ones
            raise ValueError(
                f"{type(base).__name__} has transformers' gradient checkpointing enabled, which turns the KV cache "
                "off inside its layers; call model.gradient_checkpointing_disable() and use the trace's own "
                "(`checkpoint=True`, `method.gradient_checkpointing` in training configs)"
            )
        self.parts = ModelParts.of(model)
        self.device = self.parts.embed.weight.device
        self.batch_size = batch_size
        self.cache = new_cache(self.parts.config, capacity=capacity)
        self.attention_mask = torch.zeros((batch_size, 0), dtype=torch.long, device=self.device)
        if start_positions is None:
            start_positions = torch.zeros(batch_size, dtype=torch.long)
        self.next_positions = start_positions.to(self.device, torch.long).clone()
        self.window = sliding_window_of(self.parts.config)
        self._check_kernel()
        self.key_positions = torch.zeros((batch_size, 0), dtype=torch.long, device=self.device)
        self.segments: list[Segment] = []
        self.last_hidden: torch.Tensor | None = None
        self.visible_rows: torch.Tensor | None = None
        if visible_rows is not None:
            rows = torch.as_tensor(visible_rows, dtype=torch.bool).to(self.device).flatten()
            if rows.numel() != batch_size:
                raise ValueError(
                    f"visible_rows has {rows.numel()} rows for a trace of batch size {batch_size}"
                )
            self.visible_rows = rows
        n_states = int(getattr(self.parts.config, "num_hidden_layers", 0)) + 1  # embeddings, then each block
        if latent_layer is not None and not -n_states <= latent_layer < n_states:
            raise ValueError(
                f"latent_layer {latent_layer} is out of range for a model of {n_states - 1} blocks "
                f"(0 = the embeddings ... {n_states - 1} or -1 = the final state)"
            )
        self.n_states = n_states
        self.latent_layer = latent_layer
        self.latent_source: torch.Tensor | None = None  # `latent_layer`'s hidden state at the last column
        self.layer_states: tuple[torch.Tensor, ...] = ()  # the `layers=` asked of the last append
        self.role_hook = role_hook
        self.checkpoint = checkpoint
        # Per-forward [k0, v0, k1, v1, ...] of the first `_chunk_width` columns, kept for checkpointed forwards;
        # columns appended without grad live only in the cache and are sliced into one chunk when grad returns.
        self._chunks: list[list[torch.Tensor]] = []
        self._chunk_width = 0
        self._padded = False  # some column is a pad for some row (known on the host: segment lengths)
        self._consumed_by: str | None = None  # set when the cache was handed over (`static_answer`)

    def _check_kernel(self) -> None:
        """flash-attention-2 takes only a 2-D mask and slides its window over columns, pads included."""
        kernel = getattr(self.parts.config, "_attn_implementation", None)
        if self.window is not None and kernel == "flash_attention_2" and self.batch_size > 1:
            raise ValueError(
                "sliding-window layers under flash_attention_2 count pad columns in their window, so a batch "
                "would drift from one question at a time: use attn_implementation sdpa or eager, or batch size 1"
            )

    def _masks(
        self, full_mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The attention mask to pass: the 2-D mask (transformers builds the rest), or, for sliding models, our own
        4-D masks that slide on positions (under flash-attention-2, which takes no 4-D mask, the 2-D mask)."""
        kernel = getattr(self.parts.config, "_attn_implementation", None)
        if (
            self.window is None
            and kernel == "sdpa"
            and positions.shape[1] == 1
            and not torch.is_grad_enabled()
        ):
            # One query column: SDPA's mask is the key mask itself. Passing it as 4-D skips transformers' check of
            # whether it may drop the mask, a device readback at every decoded token.
            return full_mask.bool()[:, None, None, :]
        if self.window is None or kernel == "flash_attention_2":
            return full_mask
        return attention_masks(
            full_mask,
            torch.cat([self.key_positions, positions], dim=1),
            positions,
            self.window,
            getattr(self.parts.config, "layer_types", None) is not None,
            self.parts.embed.weight.dtype,
        )

    # ------------------------------------------------------------------ views
    @property
    def width(self) -> int:
        """Columns in the trace (pads included)."""
        return self.attention_mask.shape[1]

    @property
    def real_lengths(self) -> torch.Tensor:
        """Real (non-pad) tokens per sample."""
        return self.attention_mask.sum(dim=1)

    @property
    def has_graph(self) -> bool:
        """Whether some cached column was computed under autograd (a graph that edits of the cache would cut)."""
        if self._chunks:
            return True
        return any(  # every layer, keys and values: LoRA on v_proj alone, or on later layers only, is common
            t is not None and t.requires_grad
            for layer in self.cache.layers
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
        )

    def reserve(self, columns: int) -> None:
        """Make room for `columns` more columns in every cache layer now, so appending them never regrows the
        store (decoding reserves `max_new_tokens` after its prompt: one copy instead of a doubling per overflow)."""
        for layer in self.cache.layers:
            if isinstance(layer, GrowingLayer):
                layer.reserve(self.width + columns)

    def visible_mask(self, role: str) -> torch.Tensor:
        """The past columns `role` may attend to ([B, width]): the real ones, narrowed by the channel mode (per
        row: `visible_rows` read everything; with `show_prefix` each hidden prompt's item-independent prefix
        stays readable)."""
        if self.channel == "full":
            return self.attention_mask
        hidden = [s for s in self.segments if s.role != role and s.kind != "latent"]
        if not hidden:
            return self.attention_mask
        keep = torch.ones(self.width, dtype=self.attention_mask.dtype, device=self.device)
        for s in hidden:
            keep[s.start : s.end] = 0
        shown = [s for s in hidden if self.show_prefix and s.prefix is not None and any(s.prefix)]
        if self.visible_rows is None and not shown:
            return self.attention_mask * keep
        rows = keep.unsqueeze(0).repeat(self.batch_size, 1)
        for s in shown:  # a row's real tokens are the segment's last lengths[i] columns (left padding)
            for i, (n, k) in enumerate(zip(s.lengths, s.prefix or ())):
                rows[i, s.end - n : s.end - n + min(k, n)] = 1
        if self.visible_rows is not None:
            rows[self.visible_rows] = 1
        return self.attention_mask * rows

    # ------------------------------------------------------------------ appending
    def append_tokens(
        self,
        sequences: Sequence[Sequence[int]],
        role: str,
        kind: SegmentKind = "prompt",
        *,
        prefix: Sequence[int] | None = None,
        layers: Sequence[int] = (),
    ) -> torch.Tensor:
        """Append one token list per sample (left-padded as a segment). Returns the chunk's hidden states [B, L, d]
        (final layer, normed). `prefix[i]`: how many of row i's first tokens carry no item information (readable
        under `show_prefix`); `layers`: hidden-state indices (0: embeddings, k: after block k, -1: final) whose
        [B, L, d] states are left in `layer_states`, in that order."""
        if len(sequences) != self.batch_size:
            raise ValueError(f"got {len(sequences)} sequences for a trace of batch size {self.batch_size}")
        if prefix is not None and len(prefix) != self.batch_size:
            raise ValueError(f"got {len(prefix)} prefix lengths for a trace of batch size {self.batch_size}")
        for index in layers:
            if not -self.n_states <= index < self.n_states:
                raise ValueError(f"layer {index} is out of range: the model has {self.n_states - 1} blocks")
        pad_id = getattr(self.parts.config, "pad_token_id", None) or 0
        ids, mask = left_pad(sequences, pad_id)
        lengths = tuple(len(s) for s in sequences)
        hidden = self._forward(
            role,
            kind,
            mask.to(self.device),
            input_ids=ids.to(self.device),
            known=lengths,
            layers=tuple(layers),
        )
        if prefix is not None:
            self.segments[-1] = replace(self.segments[-1], prefix=tuple(int(k) for k in prefix))
        return hidden

    def append_embeds(
        self, embeds: torch.Tensor, role: str, kind: SegmentKind, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Append input embeddings [B, L, d] (mask [B, L], left-padded; all real if None)."""
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        return self._forward(role, kind, mask.to(self.device, torch.long), inputs_embeds=embeds)

    def append_step(
        self, token_ids: torch.Tensor, role: str, alive: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Append one decoded token per sample ([B]); finished samples (`alive` False) get a masked pad column."""
        mask = None
        if alive is not None:
            mask = alive.to(self.device, torch.long).view(-1, 1)
        return self._forward(role, "answer", mask, input_ids=token_ids.view(-1, 1).to(self.device))

    def latent_steps(
        self,
        steps: int,
        realigner: Callable[[torch.Tensor], torch.Tensor],
        role: str,
        *,
        grad_last: int | None = None,
    ) -> None:
        """Run `steps` latent steps: realign the last hidden state, feed it as the next input embedding, repeat.

        `grad_last=k` runs all but the last k steps without grad (truncated backpropagation through the latents).
        """
        if steps < 0:
            raise ValueError(f"latent steps must be >= 0, got {steps}")
        if steps and self.last_hidden is None:
            raise ValueError("a latent step needs a hidden state: append a prompt segment first")
        if grad_last is not None and grad_last < steps:
            with torch.no_grad():
                self.latent_steps(steps - grad_last, realigner, role)
            steps = grad_last
        for _ in range(steps):
            source = self.last_hidden if self.latent_layer is None else self.latent_source
            embed = realigner(source).to(self.parts.embed.weight.dtype)
            self._forward(role, "latent", None, inputs_embeds=embed.unsqueeze(1))

    def _forward(
        self,
        role: str,
        kind: SegmentKind,
        chunk_mask: torch.Tensor | None,
        *,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        known: tuple[int, ...] | None = None,
        attentions: list[torch.Tensor] | None = None,
        layers: tuple[int, ...] = (),
    ) -> torch.Tensor:
        """`known`: the chunk's real lengths when the caller has them on the host (no device readback);
        `attentions`: a list that receives the body's attention weights, one tensor per layer (`append_attending`);
        `layers`: the hidden states to leave in `layer_states` (the latent layer's, when set, is kept as well)."""
        self._check_not_consumed("appended to")
        started = time.perf_counter() if _OBSERVERS else 0.0
        width = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if chunk_mask is None:
            chunk_mask = torch.ones((self.batch_size, width), dtype=torch.long, device=self.device)
            known = (width,) * self.batch_size
        # Contiguous positions over real tokens: pads take the position of the next real token (they are masked).
        positions = self.next_positions.unsqueeze(1) + (chunk_mask.cumsum(dim=1) - chunk_mask).clamp_min(0)
        visible = self.visible_mask(role)
        dense = known is not None and all(n == width for n in known) and not self._padded
        if dense and visible is self.attention_mask and self.window is None and not torch.is_grad_enabled():
            # No pad and nothing hidden: no mask, so the kernel takes its causal path (no mask built or read).
            full_mask: torch.Tensor | dict[str, torch.Tensor] | None = None
        else:
            full_mask = self._masks(torch.cat([visible, chunk_mask], dim=1), positions)
        if self.role_hook is not None:
            self.role_hook(role)
        wanted = layers + ((self.latent_layer,) if self.latent_layer is not None else ())
        if self._checkpointing():
            hidden, states = self._checkpointed_forward(
                role, full_mask, positions, input_ids, inputs_embeds, wanted
            )
        else:
            out = self.parts.body(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                attention_mask=full_mask,
                position_ids=positions,
                use_cache=True,
                output_hidden_states=bool(wanted),
                **{self.parts.cache_kwarg: self.cache},
                **({"output_attentions": True} if attentions is not None else {}),
            )
            hidden = out.last_hidden_state
            if attentions is not None:
                attentions.extend(out.attentions or ())
            states = tuple(out.hidden_states[i] for i in wanted) if wanted else ()
        self.layer_states = states[: len(layers)]
        if self.latent_layer is not None:
            self.latent_source = states[-1][:, -1]
        start = self.width
        self.attention_mask = torch.cat([self.attention_mask, chunk_mask], dim=1)
        lengths = chunk_mask.sum(dim=1)
        self.next_positions = self.next_positions + lengths
        self.key_positions = torch.cat([self.key_positions, positions], dim=1)
        self.last_hidden = hidden[:, -1]
        if known is None:
            known = tuple(int(n) for n in lengths.tolist())
        self._padded = self._padded or any(n != width for n in known)
        self._record(role, kind, start, start + width, known)
        if _OBSERVERS:
            _notify(kind, started)
        return hidden

    def _check_not_consumed(self, what: str) -> None:
        if self._consumed_by is not None:
            raise RuntimeError(f"this trace's cache was handed to {self._consumed_by}: it cannot be {what}")

    def keep_rows(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Keep only these samples, in this order (a 1-D index into the batch); the others leave the trace.

        Decoding calls it when answers finish, so a batch stops paying for rows that are done. Works under
        autograd (it is an index_select); segments keep their columns, with the kept rows' lengths.
        """
        self._check_not_consumed("edited")
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device).flatten()
        if index.numel() == 0:
            raise ValueError("keep_rows needs at least one row")
        if int(index.min()) < 0 or int(index.max()) >= self.batch_size:
            raise ValueError(
                f"rows {index.tolist()} out of range for a trace of batch size {self.batch_size}"
            )
        self.cache.batch_select_indices(index)
        self._chunks = [[t.index_select(0, index) for t in chunk] for chunk in self._chunks]
        self.attention_mask = self.attention_mask.index_select(0, index)
        self.next_positions = self.next_positions.index_select(0, index)
        self.key_positions = self.key_positions.index_select(0, index)
        if self.last_hidden is not None:
            self.last_hidden = self.last_hidden.index_select(0, index)
        if self.latent_source is not None:
            self.latent_source = self.latent_source.index_select(0, index)
        if self.visible_rows is not None:
            self.visible_rows = self.visible_rows.index_select(0, index)
        picked = index.tolist()
        self.segments = [
            replace(
                s,
                lengths=tuple(s.lengths[i] for i in picked),
                prefix=None if s.prefix is None else tuple(s.prefix[i] for i in picked),
            )
            for s in self.segments
        ]
        self.batch_size = len(picked)

    def _checkpointed_forward(
        self, role, full_mask, positions, input_ids, inputs_embeds, wanted: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Gradient checkpointing for one forward: save only its inputs, recompute its activations on backward.

        transformers turns the cache off under its own checkpointing, so we checkpoint at our level with a pure
        function of (past keys/values, inputs) -> (hidden, new keys/values) that never mutates the live cache.
        The past is passed as the list of per-forward key/value chunks, which every later step shares, so what a
        step saves is O(1) new tensors rather than a fresh copy of the whole cache (that would grow as steps x T).
        Returns the final hidden states and those of the `wanted` layers."""
        from torch.utils.checkpoint import checkpoint

        width = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        self._sync_chunks()
        n_layers, n_chunks = len(self.cache.layers), len(self._chunks)
        flat_past = [t for chunk in self._chunks for t in chunk]  # chunk = [k0, v0, k1, v1, ...]
        parts, role_hook = self.parts, self.role_hook

        def step(embeds: torch.Tensor | None, *past: torch.Tensor):
            if (
                role_hook is not None
            ):  # recomputation runs during backward: re-activate this segment's adapter
                role_hook(role)
            cache = DynamicCache(config=parts.config)
            cache.layers = [  # every column, sliding layers too
                StepLayer(
                    [past[c * 2 * n_layers + 2 * li] for c in range(n_chunks)],
                    [past[c * 2 * n_layers + 2 * li + 1] for c in range(n_chunks)],
                )
                for li in range(n_layers)
            ]
            out = parts.body(
                input_ids=input_ids,
                inputs_embeds=embeds,
                attention_mask=full_mask,
                position_ids=positions,
                use_cache=True,
                output_hidden_states=bool(wanted),
                **{parts.cache_kwarg: cache},
            )
            new = [t for layer in cache.layers for t in (layer.new_keys, layer.new_values)]
            states = [out.hidden_states[i] for i in wanted] if wanted else []
            return (out.last_hidden_state, *states, *new)

        if torch.is_grad_enabled():
            hidden, *rest = checkpoint(step, inputs_embeds, *flat_past, use_reentrant=False)
        else:
            hidden, *rest = step(inputs_embeds, *flat_past)
        states, new = tuple(rest[: len(wanted)]), rest[len(wanted) :]
        self._chunks.append(new)
        self._chunk_width = self.width + width
        for i, layer in enumerate(self.cache.layers):
            layer.update(new[2 * i], new[2 * i + 1])
        return hidden, states

    def _checkpointing(self) -> bool:
        """Checkpoint only while a graph is recorded: without one there is nothing to recompute, and the cached
        path costs O(1) per token where the checkpointed one re-concatenates every earlier chunk."""
        return self.checkpoint and torch.is_grad_enabled()

    def _sync_chunks(self) -> None:
        """Make `_chunks` cover every column: those appended without grad are sliced from the cache as one chunk."""
        if self._chunk_width == self.width:
            return
        start = self._chunk_width
        self._chunks.append(
            [t[..., start:, :] for layer in self.cache.layers for t in (layer.keys, layer.values)]
        )
        self._chunk_width = self.width

    def _record(self, role: str, kind: SegmentKind, start: int, end: int, lengths: tuple[int, ...]) -> None:
        """Merge consecutive columns of the same role and kind (latent steps, decoded tokens) into one segment."""
        last = self.segments[-1] if self.segments else None
        if (
            last is not None
            and last.role == role
            and last.kind == kind
            and kind != "prompt"
            and last.end == start
        ):
            merged = tuple(a + b for a, b in zip(last.lengths, lengths))
            self.segments[-1] = replace(last, end=end, lengths=merged)
        else:
            self.segments.append(Segment(role, kind, start, end, lengths))

    def transplant(self, other: LatentTrace, start: int, end: int) -> None:
        """Overwrite columns [start, end) of every layer's keys and values with `other`'s (same batch, same layout).

        For controls and tests that hold some columns fixed while the rest of the trace changes (no grad)."""
        if torch.is_grad_enabled():
            raise RuntimeError("transplant edits the cache in place: call it under torch.no_grad()")
        if other.batch_size != self.batch_size or not 0 <= start <= end <= min(self.width, other.width):
            raise ValueError(f"cannot transplant columns [{start}, {end}) between these traces")
        if (
            self._chunks
        ):  # checkpointed traces with grad keep per-forward copies that would disagree with the cache
            raise RuntimeError("transplant is not supported on checkpointed traces")
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys[..., start:end, :].copy_(theirs.keys[..., start:end, :])
            mine.values[..., start:end, :].copy_(theirs.values[..., start:end, :])

    def append_attending(
        self, sequences: Sequence[Sequence[int]], role: str, kind: SegmentKind = "answer"
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`append_tokens`, also returning the attention weights of every layer ([B, heads, L, width after]) over
        the whole trace: where a reader looks (the attention-mass diagnostic). Needs the eager kernel (SDPA and
        flash attention never form the weights) and no checkpointing."""
        kernel = getattr(self.parts.config, "_attn_implementation", None)
        if kernel != "eager":
            raise ValueError(
                f"attention weights need attn_implementation 'eager', not {kernel!r}: load the model with it"
            )
        if self._checkpointing():
            raise ValueError("attention weights are not recorded through a checkpointed forward")
        if len(sequences) != self.batch_size:
            raise ValueError(f"got {len(sequences)} sequences for a trace of batch size {self.batch_size}")
        pad_id = getattr(self.parts.config, "pad_token_id", None) or 0
        ids, mask = left_pad(sequences, pad_id)
        weights: list[torch.Tensor] = []
        hidden = self._forward(
            role,
            kind,
            mask.to(self.device),
            input_ids=ids.to(self.device),
            known=tuple(len(s) for s in sequences),
            attentions=weights,
        )
        if len(weights) != len(self.cache.layers):
            raise RuntimeError(
                f"{type(self.parts.body).__name__} returned {len(weights)} attention maps for "
                f"{len(self.cache.layers)} layers"
            )
        return hidden, weights

    def column_states(self, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of columns [start, end) in every layer, each [B, kv_heads, end - start, head_dim]:
        what a reader of those columns is given (the probe diagnostic reads the latent columns this way)."""
        self._check_not_consumed("read")
        if not 0 <= start <= end <= self.width:
            raise ValueError(f"columns [{start}, {end}) are outside a trace of width {self.width}")
        return [
            (layer.keys[..., start:end, :], layer.values[..., start:end, :]) for layer in self.cache.layers
        ]

    def transplant_rows(self, start: int, end: int, rows: torch.Tensor | Sequence[int]) -> None:
        """Row i's keys and values in columns [start, end) become row `rows[i]`'s, in every layer (no grad).

        The latent-donor control: each reader keeps its own prompts and reads another row's latent columns. The
        copied keys keep the rotary positions they were written at (the donor's), a shift of a few positions when
        the two rows' prompts differ in length; the mask and positions of the trace are left as they are."""
        self._check_not_consumed("edited")
        if torch.is_grad_enabled():
            raise RuntimeError("transplant_rows edits the cache in place: call it under torch.no_grad()")
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device).flatten()
        if index.numel() != self.batch_size or not 0 <= start <= end <= self.width:
            raise ValueError(
                f"cannot transplant columns [{start}, {end}) from rows {index.tolist()} in a trace of "
                f"batch size {self.batch_size} and width {self.width}"
            )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.batch_size):
            raise ValueError(f"rows {index.tolist()} out of range for batch size {self.batch_size}")
        if self._chunks:
            raise RuntimeError("transplant_rows is not supported on checkpointed traces")
        for layer in self.cache.layers:
            for states in (layer.keys, layer.values):
                states[..., start:end, :].copy_(states[index, :, start:end, :])

    def transplant_from(self, other: LatentTrace, start: int, other_start: int, width: int) -> None:
        """Columns [start, start + width) of every row become `other`'s columns [other_start, other_start + width)
        of the same row, in every layer (no grad): the latent donor, whose donors' writers ran in a trace of their
        own. Both spans must be unpadded in every row (latent columns are); the copied keys keep the rotary
        positions they were written at, as in `transplant_rows`."""
        self._check_not_consumed("edited")
        if torch.is_grad_enabled():
            raise RuntimeError("transplant_from edits the cache in place: call it under torch.no_grad()")
        if other.batch_size != self.batch_size or len(other.cache.layers) != len(self.cache.layers):
            raise ValueError(
                f"cannot transplant from a trace of batch size {other.batch_size} and "
                f"{len(other.cache.layers)} layers into one of {self.batch_size} and {len(self.cache.layers)}"
            )
        if width < 0 or not (start >= 0 and start + width <= self.width):
            raise ValueError(
                f"columns [{start}, {start + width}) are outside this trace (width {self.width})"
            )
        if not (other_start >= 0 and other_start + width <= other.width):
            raise ValueError(
                f"columns [{other_start}, {other_start + width}) are outside the other trace (width {other.width})"
            )
        if self._chunks or other._chunks:
            raise RuntimeError("transplant_from is not supported on checkpointed traces")
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            for a, b in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
                a[..., start : start + width, :].copy_(b[..., other_start : other_start + width, :])

    def generate_inputs(self, next_tokens: torch.Tensor) -> dict[str, torch.Tensor | DynamicCache]:
        """Keyword arguments that hand this trace to transformers' `generate`, which then feeds `next_tokens`
        ([B], one per row, e.g. each prompt's last token) and decodes on: the cache, the 2-D mask and explicit
        positions. The trace's own columns get placeholder ids (latent columns have none; generate reads only the
        uncached column). The cache is then generate's: the trace must not be appended to afterwards.

        Only where generate computes what the trace would: every column visible (channel `full`), and no sliding
        window over a padded trace (transformers' window counts pad columns; the trace's counts positions)."""
        if self.channel != "full":
            raise ValueError(
                "generate cannot narrow the mask per role: hand over only a `full`-channel trace"
            )
        if self.window is not None and self._padded:
            raise ValueError("generate's sliding window counts pad columns: hand over an unpadded trace")
        next_tokens = next_tokens.to(self.device, torch.long).view(-1, 1)
        pad_id = getattr(self.parts.config, "pad_token_id", None) or 0
        ids = torch.full((self.batch_size, self.width), pad_id, dtype=torch.long, device=self.device)
        ones = torch.ones_like(next_tokens)
        return {
            "input_ids": torch.cat([ids, next_tokens], dim=1),
            "attention_mask": torch.cat([self.attention_mask, ones], dim=1),
            "position_ids": torch.cat([self.key_positions, self.next_positions.view(-1, 1)], dim=1),
            self.parts.cache_kwarg: self.cache,  # what the model's forward calls its cache
        }

    def readable_layout(self, role: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Each row's columns that `role` can read (real, and visible in the channel), compacted to the left:
        (order [B, held]: the trace column behind each slot, ascending, so slot k <= column order[k] and a row
        can be compacted in place; visible [B, held]: which slots hold one, each row's first; held: the widest
        row's count). One readback (held)."""
        readable = self.visible_mask(role)
        counts = readable.sum(dim=1)
        held = int(counts.max())
        # A stable sort puts each row's readable columns first, in trace order (then the rest, masked).
        order = torch.argsort(1 - readable, dim=1, stable=True)[:, :held]
        slots = torch.arange(held, device=self.device)
        return order, (slots.view(1, -1) < counts.view(-1, 1)).long(), held

    def compact(self, role: str, reserve: int = 0, *, force: bool = False) -> int:
        """Keep only the columns `role` can read, each row's moved to the front of its store in place: the pads
        between segments and, in the `latents` channel, the columns hidden from `role` leave the cache, so every
        later step reads fewer (a row shorter than the longest keeps pads at its end). When every row then has
        the same length the trace has no pad and decoding runs without a mask (the kernel's causal path; under
        SDPA on CUDA the one that reads grouped KV heads without repeating them).

        Done when it leaves the trace dense, or when the columns removed times `reserve` (the columns still to be
        appended, each reading the cache once) is at least twice the columns kept (the copy's cost), or `force`;
        returns the columns removed (0: not done) and reserves `reserve` columns. Each row's columns keep their
        order and positions, so attention is what it was; the segments collapse into one of `role`'s (the trace
        is ready for `role` to append on, e.g. its answer, and nothing else). No grad, no new store.
        """
        self._check_not_consumed("compacted")
        if torch.is_grad_enabled() or self.has_graph:
            raise RuntimeError(
                "compact rewrites the cache: call it under torch.no_grad(), on a trace with no graph"
            )
        if self.width == 0:
            return 0
        order, visible, held = self.readable_layout(role)
        removed = self.width - held
        counts = tuple(int(n) for n in visible.sum(dim=1).tolist())
        dense = all(n == held for n in counts)
        if removed == 0 or not (force or dense or removed * reserve >= 2 * held):
            return 0
        for layer in self.cache.layers:
            if isinstance(layer, GrowingLayer):
                layer.compact_columns(order)
            else:
                layer.keys, layer.values = (
                    _gather_columns(layer.keys, order),
                    _gather_columns(layer.values, order),
                )
        self.attention_mask = visible
        self.key_positions = self.key_positions.gather(1, order)
        self.segments = [Segment(role, "prompt", 0, held, counts)]
        self._padded = not dense
        self._chunk_width = 0
        self.reserve(reserve)
        return removed

    def static_answer(
        self,
        role: str,
        max_new_tokens: int,
        compile_mode: CompileMode | None = None,
        reuse_buffers: bool | None = None,
    ) -> StaticAnswer:
        """Hand the trace to a `StaticAnswer` that decodes `role`'s answer on a cache of fixed shape; the trace is
        consumed (its cache is released as it is copied)."""
        self._check_not_consumed("read again")
        return StaticAnswer(self, role, max_new_tokens, compile_mode, reuse_buffers)

    # ------------------------------------------------------------------ reading
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the LM head and whatever the model does after it (only where logits are needed: the body runs
        without it)."""
        started = time.perf_counter() if _OBSERVERS else 0.0
        logits = self.parts.head(hidden)
        logits = self.parts.transform(logits) if self.parts.transform is not None else logits
        if _OBSERVERS:
            _notify("head", started)
        return logits

    @classmethod
    def concatenate(cls, traces: Sequence[LatentTrace]) -> LatentTrace:
        """Join traces built independently (stitching): columns, masks and segments are laid side by side.

        Build trace k with `start_positions` = trace k-1's `next_positions` so positions stay contiguous; no
        segment of one part attends to another part, but whatever is appended afterwards reads them all.
        """
        if not traces:
            raise ValueError("nothing to concatenate")
        for t in traces:
            t._check_not_consumed("concatenated")
        first = traces[0]
        joined = cls.__new__(cls)
        joined.parts, joined.device, joined.batch_size = first.parts, first.device, first.batch_size
        joined.role_hook, joined.checkpoint, joined.channel = first.role_hook, first.checkpoint, first.channel
        joined.show_prefix, joined.visible_rows = first.show_prefix, first.visible_rows
        joined.n_states, joined.latent_layer = first.n_states, first.latent_layer
        joined.latent_source, joined.layer_states = traces[-1].latent_source, ()
        if any(t._chunks for t in traces):  # chunks must then cover every part's columns
            for t in traces:
                t._sync_chunks()
        joined._chunks = [chunk for t in traces for chunk in t._chunks]
        joined._chunk_width = sum(t._chunk_width for t in traces)
        joined._padded = any(t._padded for t in traces)
        joined._consumed_by = None
        n_layers = len(first.cache.layers)
        data = []
        for i in range(n_layers):
            keys = torch.cat([t.cache.layers[i].keys for t in traces], dim=-2)
            values = torch.cat([t.cache.layers[i].values for t in traces], dim=-2)
            data.append((keys, values))
        joined.cache = new_cache(first.parts.config, data)
        joined.attention_mask = torch.cat([t.attention_mask for t in traces], dim=1)
        joined.next_positions = traces[-1].next_positions.clone()
        joined.window = first.window
        joined.key_positions = torch.cat([t.key_positions for t in traces], dim=1)
        joined.last_hidden = traces[-1].last_hidden
        joined.segments = []
        offset = 0
        for t in traces:
            joined.segments += [replace(s, start=s.start + offset, end=s.end + offset) for s in t.segments]
            offset += t.width
        return joined


def _gather_columns(states: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Columns `order` [B, n] of each row of keys or values [B, heads, T, d]: [B, heads, n, d]."""
    index = order[:, None, :, None].expand(*states.shape[:2], order.shape[1], states.shape[-1])
    return states.gather(2, index)


def step_mask(
    visible: torch.Tensor,
    key_positions: torch.Tensor,
    positions: torch.Tensor,
    window: int | None,
    per_layer_type: bool,
    kernel: str | None,
    dtype: torch.dtype,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The 4-D mask [B, 1, 1, C] of one query column over a store of C columns: `visible` [B, C] (written, real and
    readable columns), and for sliding layers keys less than `window` positions back. Boolean under SDPA, additive
    otherwise (eager adds it); a {"full_attention", "sliding_attention"} dict for bodies that mix both."""
    full = visible.bool()
    masks = {"full_attention": full}
    if window is not None:
        masks["sliding_attention"] = full & ((positions - key_positions) < window)
    if kernel != "sdpa":
        masks = {
            k: torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, torch.finfo(dtype).min)
            for k, m in masks.items()
        }
    masks = {k: m[:, None, None, :] for k, m in masks.items()}
    if window is None:
        return masks["full_attention"]
    return masks if per_layer_type else masks["sliding_attention"]


@dataclass
class _StaticStore:
    """The buffers of a static answer, kept for the next answer of the same shape (`StaticAnswer` with
    `reuse_buffers`): CUDA graphs replay on the addresses they were recorded with, and a new address is a new
    recording that every later replay checks first."""

    shape: tuple
    cache: StaticCache
    visible: torch.Tensor
    key_positions: torch.Tensor
    next_positions: torch.Tensor
    owner: weakref.ref | None = None

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
        trace: LatentTrace,
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
        for i, (source, target) in enumerate(zip(trace.cache.layers, self.cache.layers)):
            target.update(_gather_columns(source.keys, order), _gather_columns(source.values, order))
            trace.cache.layers[i] = GrowingLayer()  # release the trace's store of this layer now
        trace._consumed_by = "a static answer"
        if trace.role_hook is not None:
            trace.role_hook(role)  # the agent's adapter, for the whole answer
        # unbound (called with self): a bound method kept on self is a cycle, and the answer (with its store, which
        # the next answer may reuse) would live until the cyclic collector runs instead of until its last use
        column = StaticAnswer._column
        self._forward = torch.compile(column, mode=compile_mode, dynamic=False) if compile_mode else column

    def _store(self, trace: LatentTrace, reuse: bool) -> _StaticStore:
        """Zeroed buffers for this answer: the model's kept store when it has this shape and no live reader,
        else new ones (kept in its place when `reuse`)."""
        layers = trace.cache.layers
        shape = (trace.batch_size, self.capacity, trace.device, layers[0].keys.dtype, len(layers))
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
        cache.layers = [StaticLayer(self.capacity) for _ in layers]  # every column, sliding too
        store = _StaticStore(shape, cache, visible, torch.zeros_like(visible), trace.next_positions.clone())
        for buffer in (store.visible, store.key_positions, store.next_positions):
            torch._dynamo.mark_static_address(buffer)  # in-place updates between steps, no cudagraph copy
        if reuse and body not in _REUSED:
            store.owner = weakref.ref(self)
            _REUSED[body] = store
        return store

    @property
    def batch_size(self) -> int:
        return self.visible.shape[0]

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
        logits = self.parts.head(out.last_hidden_state[:, -1])
        logits = self.parts.transform(logits) if self.parts.transform is not None else logits
        return logits.float()

    def step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row ([B]) and return the next logits [B, vocab] (float32)."""
        if self.column >= self.capacity:
            raise RuntimeError(f"the static answer is full: {self.capacity} columns")
        started = time.perf_counter() if _OBSERVERS else 0.0
        col = self.column
        self.visible[:, col] = 1
        self.key_positions[:, col] = self.next_positions
        logits = self._forward(
            self, token_ids.view(-1, 1).to(self.visible.device), self.next_positions.view(-1, 1).clone()
        )
        self.next_positions.add_(1)
        self.column += 1
        if _OBSERVERS:
            _notify("answer", started)
        return logits
