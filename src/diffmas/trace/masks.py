"""Mask arithmetic of the trace: left padding, what a role may read in each channel, and the attention masks
passed to the body (2-D, or 4-D where the trace slides windows on real-token positions itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffmas.trace.layout import ChannelMode, Segment


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


def sliding_window_of(config: Any) -> int | None:
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


def check_window_kernel(config: Any, window: int | None, batch_size: int) -> None:
    """flash-attention-2 takes only a 2-D mask and slides its window over columns, pads included: refuse a batch."""
    kernel = getattr(config, "_attn_implementation", None)
    if window is not None and kernel == "flash_attention_2" and batch_size > 1:
        raise ValueError(
            "sliding-window layers under flash_attention_2 count pad columns in their window, so a batch "
            "would drift from one question at a time: use attn_implementation sdpa or eager, or batch size 1"
        )


def channel_visible(
    attention_mask: torch.Tensor,
    segments: Sequence[Segment],
    role: str,
    channel: ChannelMode,
    *,
    show_prefix: bool = False,
    visible_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The columns `role` may attend to ([B, width]): the real ones (`attention_mask`), narrowed by the channel:
    in `latents`, other roles' prompt and answer segments are hidden, except for rows in `visible_rows` (they
    read everything) and, with `show_prefix`, each hidden prompt's item-independent prefix. Returns
    `attention_mask` itself when nothing is hidden (callers test for that identity: no mask to build)."""
    if channel == "full":
        return attention_mask
    hidden = [s for s in segments if s.role != role and s.kind != "latent"]
    if not hidden:
        return attention_mask
    keep = torch.ones(attention_mask.shape[1], dtype=attention_mask.dtype, device=attention_mask.device)
    for s in hidden:
        keep[s.start : s.end] = 0
    shown = [s for s in hidden if show_prefix and s.prefix is not None and any(s.prefix)]
    if visible_rows is None and not shown:
        return attention_mask * keep
    rows = keep.unsqueeze(0).repeat(attention_mask.shape[0], 1)
    for s in shown:  # a row's real tokens are the segment's last lengths[i] columns (left padding)
        for i, (n, k) in enumerate(zip(s.lengths, s.prefix or ())):
            rows[i, s.end - n : s.end - n + min(k, n)] = 1
    if visible_rows is not None:
        rows[visible_rows] = 1
    return attention_mask * rows


def readable_layout(readable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Each row's readable columns (`readable` [B, width], 1 where readable) compacted to the left: (order
    [B, held]: the column behind each slot, ascending, so slot k <= column order[k] and a row can be compacted in
    place; visible [B, held]: which slots hold one, each row's first; held: the widest row's count). One
    readback (held)."""
    counts = readable.sum(dim=1)
    held = int(counts.max())
    # A stable sort puts each row's readable columns first, in trace order (then the rest, masked).
    order = torch.argsort(1 - readable, dim=1, stable=True)[:, :held]
    slots = torch.arange(held, device=readable.device)
    return order, (slots.view(1, -1) < counts.view(-1, 1)).long(), held


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


def forward_mask(
    full_mask: torch.Tensor,
    key_positions: torch.Tensor,
    positions: torch.Tensor,
    window: int | None,
    config: Any,
    dtype: torch.dtype,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The attention mask to pass for a chunk at `positions` over a trace whose written columns sit at
    `key_positions` (`full_mask` [B, K]: visible past and the chunk's own real columns): the 2-D mask
    (transformers builds the rest), or, for sliding models, our own 4-D masks that slide on positions (under
    flash-attention-2, which takes no 4-D mask, the 2-D mask)."""
    kernel = getattr(config, "_attn_implementation", None)
    if window is None and kernel == "sdpa" and positions.shape[1] == 1 and not torch.is_grad_enabled():
        # One query column: SDPA's mask is the key mask itself. Passing it as 4-D skips transformers' check of
        # whether it may drop the mask, a device readback at every decoded token.
        return full_mask.bool()[:, None, None, :]
    if window is None or kernel == "flash_attention_2":
        return full_mask
    return attention_masks(
        full_mask,
        torch.cat([key_positions, positions], dim=1),
        positions,
        window,
        getattr(config, "layer_types", None) is not None,
        dtype,
    )


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
