"""The decode loop reads the device once per block of steps, yet keeps exactly the tokens of a per-step readback;
the cache is allocated once for a decode whose length is known."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from diffmas.decoding import DecodeConfig, Decoded, decode
from diffmas.trace import GrowingLayer, LatentTrace

PROMPTS = ("two plus two", "a longer question about apples and pears", "x", "what is the capital of France")


def _run(backbone, prompts, config, stop_ids=frozenset(), sync_every=None, generator=None, capacity=0):
    trace = LatentTrace(backbone.model, len(prompts), capacity=capacity)
    with torch.no_grad():
        out = decode(
            trace,
            prompts,
            "solver",
            backbone.tokenizer,
            config,
            set(stop_ids),
            generator,
            sync_every=sync_every,
        )
    return out, trace


def _same(a: Decoded, b: Decoded) -> None:
    assert a.token_ids == b.token_ids
    assert (a.text, a.stopped, a.matched, a.trace_len) == (b.text, b.stopped, b.matched, b.trace_len)
    torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(a.entropies), torch.tensor(b.entropies), atol=1e-4, rtol=1e-4)


def _stop_id_seen(backbone, prompts) -> int:
    """A token the free greedy run draws early in one answer but not in all: a stop id that ends rows apart."""
    free, _ = _run(backbone, prompts, DecodeConfig(max_new_tokens=16), sync_every=1)
    for d in free:
        for t in d.token_ids[2:8]:
            if sum(t in e.token_ids for e in free) < len(free):
                return t
    raise AssertionError("no token distinguishes the answers")


@pytest.mark.parametrize(("family", "sync_every"), [("llama", 3), ("qwen2", 8)])
def test_blocked_readback_keeps_the_per_step_tokens_batched_and_alone(family, sync_every):
    from diffmas.testing import tiny_backbone

    backbone = tiny_backbone(family)
    prompts = [backbone.tokenizer.encode(q) for q in PROMPTS]
    stop = _stop_id_seen(backbone, prompts)
    for config in (
        DecodeConfig(max_new_tokens=14),
        DecodeConfig(max_new_tokens=14, stop_pattern=r"[\s\S]{9}"),
    ):
        per_step, _ = _run(backbone, prompts, config, {stop}, sync_every=1)
        blocked, trace = _run(backbone, prompts, config, {stop}, sync_every=sync_every)
        assert any(d.stopped for d in per_step) or any(d.matched for d in per_step)
        for a, b, prompt in zip(blocked, per_step, prompts):
            _same(a, b)
            alone, _ = _run(backbone, [prompt], config, {stop}, sync_every=sync_every)
            _same(alone[0], a)
            assert a.trace_len == len(prompt) + len(a.token_ids) - 1


def test_sampling_is_deterministic_and_top_k_one_is_greedy_under_blocked_readback(llama):
    prompts = [llama.tokenizer.encode(q) for q in PROMPTS]
    sampled = DecodeConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, stop_pattern=r"[\s\S]{12}")
    first, _ = _run(llama, prompts, sampled, sync_every=4, generator=torch.Generator().manual_seed(3))
    again, _ = _run(llama, prompts, sampled, sync_every=4, generator=torch.Generator().manual_seed(3))
    other, _ = _run(llama, prompts, sampled, sync_every=4, generator=torch.Generator().manual_seed(4))
    for a, b in zip(first, again):
        _same(a, b)
    assert [d.token_ids for d in first] != [d.token_ids for d in other]
    greedy, _ = _run(llama, prompts, DecodeConfig(max_new_tokens=10), sync_every=1)
    top1 = DecodeConfig(max_new_tokens=10, temperature=0.7, top_k=1)
    sampled_top1, _ = _run(llama, prompts, top1, sync_every=4, generator=torch.Generator().manual_seed(0))
    assert [d.token_ids for d in sampled_top1] == [d.token_ids for d in greedy]


def _host_reads(fn) -> int:
    """Calls that read a tensor back to the host (a device sync on a GPU), from diffmas or transformers."""
    names = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__")
    counts: Counter[str] = Counter()
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def counting(name):
        real = saved[name]

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if "/tests/" not in caller:
                counts[name] += 1
            return real(self, *args, **kwargs)

        return read

    try:
        for n in names:
            setattr(torch.Tensor, n, counting(n))
        fn()
    finally:
        for n, real in saved.items():
            setattr(torch.Tensor, n, real)
    return sum(counts.values())


def test_the_loop_reads_the_device_once_per_block_not_per_token(llama):
    """The loop used to read lengths, log-probs, entropies and the stop check back at every token, and
    transformers read the 2-D mask at every forward (may it drop the mask?)."""
    config = DecodeConfig(max_new_tokens=48, stop_pattern=r"never-matches-\d{9}")
    for prompts in ([[5, 6, 7]], [[5, 6, 7], [8, 9]]):  # no pad (no mask), and pads (a mask every step)
        reads = _host_reads(lambda: _run(llama, prompts, config, sync_every=8))  # noqa: B023
        assert reads <= 2 * (48 // 8) + 6  # two copies per block, the prompt's lengths and a few at the ends


def test_a_trace_without_pads_passes_no_mask_and_matches_a_masked_one(llama):
    """Batch 1 (or equal lengths) needs no mask: the kernel's causal path, same tokens as with the mask."""
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12]]
    config = DecodeConfig(max_new_tokens=10)
    masks = []
    body = llama.model.get_decoder()
    hook = body.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    try:
        dense, _ = _run(llama, prompts, config)
    finally:
        hook.remove()
    assert masks and all(m is None for m in masks)
    padded, _ = _run(llama, [*prompts, [13]], config)  # a third, shorter row puts pads in the trace
    for a, b in zip(dense, padded):
        _same(a, b)


def _allocations(trace: LatentTrace) -> list[int]:
    return [layer.allocations for layer in trace.cache.layers if isinstance(layer, GrowingLayer)]


def test_a_capacity_hint_allocates_the_cache_once_for_the_whole_decode(llama):
    prompts = [list(range(5, 15)), list(range(20, 26))]
    config = DecodeConfig(max_new_tokens=150)
    hinted, trace = _run(llama, prompts, config, capacity=10 + 150)
    assert _allocations(trace) == [1] * len(trace.cache.layers)
    assert all(layer._key_store.shape[-2] == 160 for layer in trace.cache.layers)  # exactly, not doubled
    plain, trace = _run(llama, prompts, config)
    # without a hint: 64 columns for the prompt, then 160 when decoding reserves its answer (doubling went on
    # 64 -> 130 -> 262: three allocations, 100 columns of the last one never used)
    assert _allocations(trace) == [2] * len(trace.cache.layers)
    for a, b in zip(hinted, plain):
        _same(a, b)


def test_reserve_regrows_once_keeps_the_cache_and_is_a_hint_before_the_first_append(llama):
    torch.manual_seed(0)
    layer = GrowingLayer()
    layer.reserve(50)  # not initialized yet: only the hint
    chunk = torch.randn(2, 3, 5, 4)
    with torch.no_grad():
        layer.update(chunk, -chunk)
        assert layer._key_store.shape[-2] == 50 and layer.allocations == 1
        layer.reserve(500)
        assert layer._key_store.shape[-2] == 500 and layer.allocations == 2
        assert torch.equal(layer.keys, chunk) and torch.equal(layer.values, -chunk)
        for _ in range(400):
            layer.update(chunk[:, :, :1], chunk[:, :, :1])
    assert layer.allocations == 2 and layer.keys.shape[-2] == 405


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_generate_handed_the_prefilled_trace_draws_our_greedy_tokens(family):
    """`LatentTrace.generate_inputs` hands a trace with latent columns and pads in the middle to `generate`."""
    from transformers import GenerationConfig

    from diffmas.realign import build_realigner
    from diffmas.testing import tiny_backbone

    backbone = tiny_backbone(family)
    tok, realigner = backbone.tokenizer, build_realigner("norm", backbone.model)
    upstream = [tok.encode(q) for q in PROMPTS[:3]]
    solver = [tok.encode(f"answer {q}") for q in ("one", "three long words", "x y")]

    def prefilled(rows):
        trace = LatentTrace(backbone.model, len(rows))
        trace.append_tokens([upstream[i] for i in rows], "planner")
        trace.latent_steps(2, realigner, "planner")
        trace.append_tokens([solver[i][:-1] for i in rows], "solver")
        return trace, torch.tensor([solver[i][-1] for i in rows])

    config = GenerationConfig(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    for rows in ([1], [0, 1, 2]):
        with torch.no_grad():
            trace, last = prefilled(rows)
            ours = decode(
                trace, [[int(t)] for t in last], "solver", tok, DecodeConfig(max_new_tokens=8), set()
            )
            trace, last = prefilled(rows)
            inputs = trace.generate_inputs(last)
            seqs = backbone.model.generate(**inputs, generation_config=config)
        assert seqs[:, inputs["input_ids"].shape[1] :].tolist() == [d.token_ids for d in ours]
    narrowed = LatentTrace(backbone.model, 1, channel="latents")
    with pytest.raises(ValueError, match="full"):
        narrowed.generate_inputs(torch.tensor([5]))
