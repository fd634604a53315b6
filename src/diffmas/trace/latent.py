"""`LatentTrace`: one append-only, batched KV cache per question, shared by every agent of a chain.

The rules it keeps (left padding per segment, the 2-D mask, positions over real tokens, the channel modes) are
described in the package docstring (`diffmas.trace`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import torch
from torch import nn
from transformers import DynamicCache

from diffmas.configs import CompileMode
from diffmas.trace import hooks
from diffmas.trace.checkpointing import checkpointed_body, refuse_library_checkpointing
from diffmas.trace.edits import ColumnEdits
from diffmas.trace.layers import GrowingLayer, gather_columns, new_cache
from diffmas.trace.layout import CHANNEL_MODES, ChannelMode, RoleHook, Segment, SegmentKind
from diffmas.trace.masks import (
    channel_visible,
    check_window_kernel,
    forward_mask,
    left_pad,
    readable_layout,
    sliding_window_of,
)
from diffmas.trace.parts import ModelParts
from diffmas.trace.static import StaticAnswer


def _chunk_width(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> int:
    """Columns in a chunk given as token ids [B, L] or input embeddings [B, L, d]."""
    if input_ids is not None:
        return int(input_ids.shape[1])
    if inputs_embeds is None:
        raise ValueError("a forward needs input_ids or inputs_embeds")
    return int(inputs_embeds.shape[1])


class LatentTrace(ColumnEdits):
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
        step feeds back (None: the final one). See the package docstring (`diffmas.trace`)."""
        if channel not in CHANNEL_MODES:
            raise ValueError(f"channel must be one of {CHANNEL_MODES}, got {channel!r}")
        self.channel = channel
        self.show_prefix = show_prefix
        refuse_library_checkpointing(model)
        self.parts = ModelParts.of(model)
        self.device = self.parts.embed.weight.device
        self.batch_size = batch_size
        self.cache = new_cache(self.parts.config, capacity=capacity)
        self.attention_mask = torch.zeros((batch_size, 0), dtype=torch.long, device=self.device)
        if start_positions is None:
            start_positions = torch.zeros(batch_size, dtype=torch.long)
        self.next_positions = start_positions.to(self.device, torch.long).clone()
        self.window = sliding_window_of(self.parts.config)
        check_window_kernel(self.parts.config, self.window, batch_size)
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
        return channel_visible(
            self.attention_mask,
            self.segments,
            role,
            self.channel,
            show_prefix=self.show_prefix,
            visible_rows=self.visible_rows,
        )

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
        started = hooks.started()
        width = _chunk_width(input_ids, inputs_embeds)
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
            full_mask = forward_mask(
                torch.cat([visible, chunk_mask], dim=1),
                self.key_positions,
                positions,
                self.window,
                self.parts.config,
                self.parts.embed.weight.dtype,
            )
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
        hooks.notify(kind, started)
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
        self,
        role: str,
        full_mask: torch.Tensor | dict[str, torch.Tensor] | None,
        positions: torch.Tensor,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        wanted: tuple[int, ...] = (),
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One forward under the trace's own gradient checkpointing (`checkpointing.py`): the body reads every
        earlier column as the per-forward chunks, and the new columns become a chunk and enter the cache.
        Returns the final hidden states and those of the `wanted` layers."""
        width = _chunk_width(input_ids, inputs_embeds)
        self._sync_chunks()
        hidden, states, new = checkpointed_body(
            self.parts,
            self._chunks,
            role,
            self.role_hook,
            full_mask,
            positions,
            input_ids,
            inputs_embeds,
            wanted,
        )
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
        row's count). One readback (held); see `masks.readable_layout`."""
        return readable_layout(self.visible_mask(role))

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
                    gather_columns(layer.keys, order),
                    gather_columns(layer.values, order),
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

    def hand_over(self, order: torch.Tensor, to: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values at columns `order` [B, n] (`readable_layout`), in layer order; a layer's
        store is released once the receiver took its columns, so the KV is never held twice. Consumes the trace."""
        self._check_not_consumed("read again")
        self._consumed_by = to
        for i, layer in enumerate(self.cache.layers):
            yield gather_columns(layer.keys, order), gather_columns(layer.values, order)
            self.cache.layers[i] = GrowingLayer()  # release this layer's store now

    @property
    def kv_layout(self) -> tuple[int, torch.dtype]:
        """(layers, dtype) of the cache's keys and values."""
        return len(self.cache.layers), self.cache.layers[0].keys.dtype

    # ------------------------------------------------------------------ reading
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the LM head and whatever the model does after it (only where logits are needed: the body runs
        without it)."""
        started = hooks.started()
        logits = self.parts.logits(hidden)
        hooks.notify("head", started)
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
