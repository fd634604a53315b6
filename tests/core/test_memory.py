"""The KV size computed from a config is what a trace really allocates, and the batch it picks fits its budget."""

from __future__ import annotations

import pytest
import torch

from diffmas.decoding import DecodeConfig, decode
from diffmas.memory import auto_batch_size, kv_budget, kv_bytes_per_column, trace_columns
from diffmas.trace import LatentTrace


def _store_bytes(trace: LatentTrace) -> int:
    return sum(
        t.numel() * t.element_size()
        for layer in trace.cache.layers
        for t in (layer._key_store, layer._value_store)
    )


@pytest.mark.parametrize(
    "family", ["qwen3", "mistral3"]
)  # grouped KV heads, an explicit head_dim, a nested config
def test_kv_bytes_per_column_is_what_a_hinted_trace_allocates(family):
    from diffmas.testing import tiny_family, tiny_tokenizer

    model = tiny_family(family)
    prompts, new = [[5, 6, 7, 8], [9, 10]], 6
    trace = LatentTrace(model, len(prompts), capacity=4 + new)
    with torch.no_grad():
        decode(trace, prompts, "solver", tiny_tokenizer(), DecodeConfig(max_new_tokens=new), set())
    per_column = kv_bytes_per_column(model.config)
    assert (
        per_column == 2 * 2 * 2 * 8 * 4
    )  # K and V, 2 layers, 2 KV heads (not 4 query heads), head_dim 8, fp32
    assert _store_bytes(trace) == len(prompts) * (4 + new) * per_column
    assert kv_bytes_per_column(model.config, torch.bfloat16) == per_column // 2
    assert kv_bytes_per_column(model.config, "bfloat16") == per_column // 2


def test_head_dim_defaults_to_hidden_over_heads(llama):
    config = llama.model.config
    config_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    expected = (
        2 * config.num_hidden_layers * config_heads * (config.hidden_size // config.num_attention_heads)
    )
    assert kv_bytes_per_column(config, torch.float32) == expected * 4


def test_auto_batch_size_is_the_largest_batch_in_the_budget(llama):
    config = llama.model.config
    per_question = kv_bytes_per_column(config) * 300
    assert auto_batch_size(config, 300, 7 * per_question) == 7
    assert auto_batch_size(config, 300, 7 * per_question - 1) == 6
    assert auto_batch_size(config, 300, 7 * per_question, limit=4) == 4
    assert auto_batch_size(config, 150, 7 * per_question) == 14  # half the trace, twice the batch
    assert auto_batch_size(config, 300, 7 * per_question, dtype=torch.bfloat16) == 14
    with pytest.raises(ValueError, match="exceeds the budget"):
        auto_batch_size(config, 300, per_question - 1)
    with pytest.raises(ValueError, match="trace_len"):
        auto_batch_size(config, 0, per_question)


def test_kv_budget_needs_an_accelerator_or_an_explicit_budget():
    with pytest.raises(ValueError, match="pass the KV budget"):
        kv_budget("cpu")
    with pytest.raises(ValueError, match="fraction"):
        kv_budget("cpu", fraction=0)


def test_trace_columns_counts_what_a_latent_chain_appends(llama):
    from diffmas.realign import build_realigner

    prompts = [[5, 6, 7], [8, 9, 10, 11], [12, 13]]  # planner, critic, solver
    trace = LatentTrace(llama.model, 1)
    with torch.no_grad():
        for role, prompt in zip(("planner", "critic"), prompts):
            trace.append_tokens([prompt], role)
            trace.latent_steps(3, build_realigner("norm", llama.model), role)
        out = decode(trace, [prompts[-1]], "solver", llama.tokenizer, DecodeConfig(max_new_tokens=5), set())
    # the last answer token is never fed back: the trace ends one column short of the budget's count
    assert trace.width + 1 == out[0].trace_len + 1 == trace_columns([len(p) for p in prompts], 3, 5)
    with pytest.raises(ValueError, match="Solver"):
        trace_columns([], 3, 5)
