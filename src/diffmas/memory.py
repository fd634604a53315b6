"""KV-cache sizes from a model config: how many questions an evaluation batch can hold in a memory budget.

A batch's trace keeps, per question and per column, one key and one value vector per layer and KV head, and every
layer keeps every column (sliding layers too: see `diffmas.trace.new_cache`). With the trace's capacity known
(prompt + latents + `max_new_tokens`) the cache is allocated once at that size, so the budget check is exact for
the KV; activations of a forward come on top, which is why `kv_budget` keeps a margin of the free memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _dtype_of(config, dtype: torch.dtype | str | None) -> torch.dtype:
    chosen = (
        dtype if dtype is not None else getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    )
    if chosen is None:
        return torch.float32
    if isinstance(chosen, str):
        chosen = getattr(torch, chosen.removeprefix("torch."))
    if not isinstance(chosen, torch.dtype):
        raise ValueError(f"not a dtype: {chosen!r}")
    return chosen


def kv_bytes_per_column(config, dtype: torch.dtype | str | None = None) -> int:
    """Bytes one question's trace needs per column: keys and values of every layer and KV head.

    `dtype`: the cache's dtype (the model's); None reads the config's, float32 if it names none."""
    text = _text_config(config)
    layers = int(text.num_hidden_layers)
    heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * layers * heads * int(head_dim) * _dtype_of(text, dtype).itemsize


def trace_columns(prompt_lengths: Sequence[int], latent_steps: int, max_new_tokens: int) -> int:
    """Columns of one question's trace when the Solver's answer ends: every agent's prompt (the Solver's last),
    `latent_steps` latents after each upstream prompt, and the answer. Use the longest prompts of a batch: each
    segment is padded to its longest row."""
    if not prompt_lengths:
        raise ValueError("a trace has at least the Solver's prompt")
    return sum(prompt_lengths) + latent_steps * (len(prompt_lengths) - 1) + max_new_tokens


def auto_batch_size(
    config,
    trace_len: int,
    budget_bytes: int,
    *,
    dtype: torch.dtype | str | None = None,
    limit: int | None = None,
) -> int:
    """The largest batch whose traces of `trace_len` columns fit `budget_bytes` of KV cache (at most `limit`,
    e.g. the number of questions). Raises when not even one question fits, rather than returning 0.

    `trace_len` counts every column the Solver's answer ends on: the prompts and latents of each agent plus
    `max_new_tokens`, and the pads a batch adds to each segment (a margin for those belongs in it)."""
    if trace_len < 1:
        raise ValueError(f"trace_len must be >= 1, got {trace_len}")
    per_question = kv_bytes_per_column(config, dtype) * trace_len
    fits = budget_bytes // per_question
    if fits < 1:
        raise ValueError(
            f"one question's KV cache ({per_question / 2**20:.1f} MiB for {trace_len} columns) exceeds the "
            f"budget of {budget_bytes / 2**20:.1f} MiB"
        )
    return int(min(fits, limit)) if limit is not None else int(fits)


def kv_budget(device: torch.device | str, fraction: float = 0.6) -> int:
    """A KV budget on `device`: `fraction` of the accelerator memory free now (the rest for activations and the
    allocator's slack). CPU memory is the host's to share, so a CPU budget must be given explicitly."""
    device = torch.device(device)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if device.type != "cuda":
        raise ValueError(f"no free-memory probe for {device.type}: pass the KV budget in bytes")
    free, _total = torch.cuda.mem_get_info(device)
    return int(free * fraction)
