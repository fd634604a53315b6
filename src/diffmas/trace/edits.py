"""Reading and overwriting a trace's cache columns in place: what the diagnostics and the controls do to a built
trace (the probe reads latent keys and values, the latent donor swaps them between rows or traces). No grad, and
never on a checkpointed trace, whose per-forward chunks would disagree with the edited cache."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache


class ColumnEdits:
    """`LatentTrace`'s column reads and in-place edits, kept apart from appending; the trace provides what is
    declared here."""

    cache: DynamicCache
    batch_size: int
    device: torch.device
    _chunks: list[list[torch.Tensor]]

    @property
    def width(self) -> int:
        raise NotImplementedError

    def _check_not_consumed(self, what: str) -> None:
        raise NotImplementedError

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

    def transplant_from(self, other: ColumnEdits, start: int, other_start: int, width: int) -> None:
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
