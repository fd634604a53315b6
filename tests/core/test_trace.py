"""The latent KV trace: bookkeeping, batch invariance, and gradient flow."""

from __future__ import annotations

import pytest
import torch

from diffmas.methods import MethodConfig, build_latent_trace, get_method
from diffmas.methods.latent_mas import LatentMAS
from diffmas.realign import build_realigner
from diffmas.testing import first_latent_grad
from diffmas.trace import LatentTrace, left_pad

FMT = "Give the final answer in \\boxed{}."


def test_left_pad_puts_real_tokens_last():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], pad_id=0)


def test_trace_bookkeeping(backbone, questions):
    """Trace length = real prompt tokens + (K-1) * m per sample; positions run contiguously over real tokens."""
    m = 3
    method = LatentMAS(backbone, config=MethodConfig(latent_steps=m))
    with torch.no_grad():
        trace, messages = build_latent_trace(method, questions, FMT)
    prompt_lengths = [
        sum(len(ids) for ids in per_role)
        for per_role in zip(*(method.encode(r, questions, FMT) for r in method.roles.upstream))
    ]
    k = len(method.roles.roles)
    assert trace.real_lengths.tolist() == [p + (k - 1) * m for p in prompt_lengths]
    assert trace.next_positions.tolist() == trace.real_lengths.tolist()
    assert trace.width == trace.cache.get_seq_length()
    kinds = [(s.role, s.kind) for s in trace.segments]
    assert kinds == [(r.name, kind) for r in method.roles.upstream for kind in ("prompt", "latent")]
    assert [msg.end - msg.start for msg in messages] == [m] * (k - 1)
    for seg in trace.segments:
        if seg.kind == "latent":
            assert seg.lengths == (m,) * len(questions)


def test_explicit_positions_match_one_at_a_time(llama, questions):
    """Each sample's hidden state at the last column equals the same sample run alone."""
    realigner = build_realigner("ridge", llama.model)
    encoded = [llama.tokenizer(q)["input_ids"] for q in questions]
    with torch.no_grad():
        batch = LatentTrace(llama.model, len(questions))
        batch.append_tokens(encoded, "a")
        batch.latent_steps(2, realigner, "a")
        batch.append_tokens([ids[:3] for ids in reversed(encoded)], "b")
        for i, ids in enumerate(encoded):
            alone = LatentTrace(llama.model, 1)
            alone.append_tokens([ids], "a")
            alone.latent_steps(2, realigner, "a")
            alone.append_tokens([list(reversed(encoded))[i][:3]], "b")
            torch.testing.assert_close(batch.last_hidden[i], alone.last_hidden[0], atol=1e-5, rtol=1e-4)


# A batch answers as one at a time, in both channels: tests/core/test_method_contract.py, for every method.


def test_no_comm_equals_single_exactly(backbone, questions):
    cfg = MethodConfig(latent_steps=4, max_new_tokens=8)
    with torch.no_grad():
        single = get_method("single", backbone, config=cfg).run(questions, FMT)
        no_comm = get_method("no_comm", backbone, config=cfg).run(questions, FMT)
    for s, n in zip(single, no_comm):
        assert s.text == n.text
        assert s.answer.token_ids == n.answer.token_ids
        assert s.answer.logprobs == n.answer.logprobs
        assert s.trace_len == n.trace_len


def test_zero_latent_steps_still_passes_upstream_prompts(backbone, questions):
    """`latent_steps=0` is not the single agent in disguise: the upstream prompts stay in the trace."""
    cfg = MethodConfig(latent_steps=0, max_new_tokens=6)
    with torch.no_grad():
        latent = get_method("latent_mas", backbone, config=cfg).run(questions, FMT)
        single = get_method("single", backbone, config=cfg).run(questions, FMT)
    for lat, sin in zip(latent, single):
        assert lat.trace_len > sin.trace_len
        assert [m.role for m in lat.messages] == ["planner", "critic", "refiner"]
    assert any(lat.answer.logprobs != sin.answer.logprobs for lat, sin in zip(latent, single))


def test_stitch_differs_from_chain_but_has_same_shape(llama, questions):
    cfg = MethodConfig(latent_steps=3, max_new_tokens=4)
    with torch.no_grad():
        chain = get_method("latent_mas", llama, config=cfg).run(questions, FMT)
        stitch = get_method("stitch_mas", llama, config=cfg).run(questions, FMT)
    assert [c.trace_len for c in chain] == [s.trace_len for s in stitch]
    assert any(c.answer.logprobs != s.answer.logprobs for c, s in zip(chain, stitch))


def test_stitched_first_segment_equals_chain_first_segment(llama, questions):
    """The first upstream agent sees nothing before it in either method, so its KV must match exactly."""
    cfg = MethodConfig(latent_steps=2)
    method = LatentMAS(llama, config=cfg)
    with torch.no_grad():
        chain, _ = build_latent_trace(method, questions, FMT)
        first = method.new_trace(len(questions))
        first.append_tokens(method.encode(method.roles.upstream[0], questions, FMT), "planner")
        first.latent_steps(2, method.realigner, "planner")
    w = first.width
    torch.testing.assert_close(chain.cache.layers[0].keys[..., :w, :], first.cache.layers[0].keys)


def test_gradient_reaches_first_latent_step(backbone, questions):
    """A loss on the Solver's tokens gives a non-zero gradient at the Planner's first latent input."""
    grad = first_latent_grad(LatentMAS(backbone, config=MethodConfig(latent_steps=3)), questions, FMT)
    assert grad is not None
    assert grad.abs().sum() > 0


def test_latent_steps_need_a_prompt_first(llama):
    trace = LatentTrace(llama.model, 2)
    with pytest.raises(ValueError, match="append a prompt segment first"):
        trace.latent_steps(1, build_realigner("norm", llama.model), "planner")
    with pytest.raises(ValueError, match=">= 0"):
        trace.latent_steps(-1, build_realigner("norm", llama.model), "planner")


def test_growing_cache_layer_matches_concatenation_and_yields_to_autograd():
    from transformers.cache_utils import DynamicLayer

    from diffmas.trace import GrowingLayer

    torch.manual_seed(0)
    chunks = [torch.randn(2, 3, n, 4) for n in (5, 1, 1, 70, 1)]
    growing, plain = GrowingLayer(), DynamicLayer()
    with torch.no_grad():
        for c in chunks:
            k, v = growing.update(c, -c)
            k_ref, v_ref = plain.update(c, -c)
            assert torch.equal(k, k_ref) and torch.equal(v, v_ref)
    store = growing._key_store
    assert store.shape[-2] > growing.keys.shape[-2]  # preallocated headroom, written in place
    growing.crop(-3)  # an outside edit: the next append still sees a consistent cache
    plain.crop(-3)
    with torch.no_grad():
        assert torch.equal(growing.update(chunks[1], chunks[1])[0], plain.update(chunks[1], chunks[1])[0])
    # with grad on, it concatenates (in-place writes would break saved tensors), and stays that way
    x = torch.randn(2, 3, 1, 4, requires_grad=True)
    k, _ = growing.update(x, x)
    k.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with torch.no_grad():
        growing.update(chunks[1], chunks[1])
    assert growing._key_store is None and growing.keys.shape[-2] == plain.keys.shape[-2] + 2


def test_trace_cache_uses_growing_layers(llama):
    from diffmas.trace import GrowingLayer

    trace = LatentTrace(llama.model, 1)
    assert all(isinstance(layer, GrowingLayer) for layer in trace.cache.layers)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_keep_rows_leaves_what_those_rows_alone_would_have(llama, questions, checkpoint):
    """After keep_rows, appending more equals a trace built from the kept questions alone."""
    realigner = build_realigner("ridge", llama.model)
    encoded = [llama.tokenizer(q)["input_ids"] for q in questions]
    tail = [[7, 8, 9], [10], [11, 12], [13]]
    keep = [2, 0]
    with torch.no_grad():
        full = LatentTrace(llama.model, len(questions), checkpoint=checkpoint)
        full.append_tokens(encoded, "a")
        full.latent_steps(2, realigner, "a")
        full.keep_rows(keep)
        full.append_tokens([tail[i] for i in keep], "b")
        part = LatentTrace(llama.model, len(keep), checkpoint=checkpoint)
        part.append_tokens([encoded[i] for i in keep], "a")
        part.latent_steps(2, realigner, "a")
        part.append_tokens([tail[i] for i in keep], "b")
    assert full.batch_size == 2
    assert [s.lengths for s in full.segments] == [s.lengths for s in part.segments]
    assert full.real_lengths.tolist() == part.real_lengths.tolist()
    assert full.next_positions.tolist() == part.next_positions.tolist()
    torch.testing.assert_close(full.last_hidden, part.last_hidden, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        full.keep_rows([5])
    with pytest.raises(ValueError, match="at least one row"):
        full.keep_rows([])


def test_keep_rows_compacts_the_store_in_place_without_regrow(llama, questions, monkeypatch):
    """`keep_rows` used to replace every layer's keys by a copy, so the next append regrew the store."""
    from diffmas.trace import GrowingLayer

    grows = []
    original = GrowingLayer._grow
    monkeypatch.setattr(GrowingLayer, "_grow", staticmethod(lambda *a: grows.append(1) or original(*a)))
    encoded = [llama.tokenizer(q)["input_ids"] for q in questions]
    with torch.no_grad():
        trace = LatentTrace(llama.model, len(questions))
        trace.append_tokens(encoded, "a")
        stores = [layer._key_store.data_ptr() for layer in trace.cache.layers]
        grown = len(grows)
        trace.keep_rows([1, 3])
        trace.append_step(torch.tensor([7, 8]), "a")
        trace.keep_rows([1, 0])  # another order: still in place
        trace.append_step(torch.tensor([9, 9]), "a")
        regrown = len(grows) - grown
        alone = LatentTrace(llama.model, 2)
        alone.append_tokens([encoded[3], encoded[1]], "a")
        alone.append_step(torch.tensor([8, 7]), "a")
        alone.append_step(torch.tensor([9, 9]), "a")
    assert regrown == 0
    assert [layer._key_store.data_ptr() for layer in trace.cache.layers] == stores
    torch.testing.assert_close(trace.last_hidden, alone.last_hidden, atol=1e-5, rtol=1e-4)


def test_checkpointed_trace_without_grad_concatenates_nothing_per_step(llama, monkeypatch):
    """Under no_grad a checkpointed trace re-concatenated every earlier chunk at every step (O(T^2));
    the KV bytes concatenated per decode step must not grow with the answer length."""
    cat_bytes: list[int] = []
    real_cat = torch.cat

    def counting_cat(tensors, *args, **kwargs):
        out = real_cat(tensors, *args, **kwargs)
        if out.dim() == 4:  # keys/values; masks are 2-D
            cat_bytes.append(out.numel() * out.element_size())
        return out

    per_step = []
    with torch.no_grad():
        trace = LatentTrace(llama.model, 2, checkpoint=True)
        trace.append_tokens([[5, 6, 7], [8, 9]], "a")
        monkeypatch.setattr(torch, "cat", counting_cat)
        for _ in range(30):
            cat_bytes.clear()
            trace.append_step(torch.tensor([7, 8]), "a")
            per_step.append(sum(cat_bytes))
    assert per_step[-1] == per_step[5]  # constant in the trace length (today: zero)


def test_checkpointed_trace_mixing_no_grad_and_grad_matches_plain(llama, questions):
    """Columns appended without grad are sliced from the cache when a checkpointed forward with grad needs them."""
    realigner = build_realigner("ridge", llama.model)
    encoded = [llama.tokenizer(q)["input_ids"] for q in questions]
    results = []
    for checkpoint in (False, True):
        trace = LatentTrace(llama.model, len(questions), checkpoint=checkpoint)
        with torch.no_grad():
            trace.append_tokens(encoded, "a")
            trace.latent_steps(2, realigner, "a")
        trace.latent_steps(2, realigner, "a")
        hidden = trace.append_tokens([[11, 12]] * len(questions), "b")
        loss = trace.logits(hidden[:, -1]).log_softmax(-1)[:, 3].sum()
        grads = torch.autograd.grad(loss, [p for p in llama.model.parameters()][:3], allow_unused=True)
        results.append((hidden.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)
    for a, b in zip(results[0][1], results[1][1]):
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_model_with_library_gradient_checkpointing_is_refused():
    """transformers' per-layer checkpointing drops the cache inside its layers: a second segment would silently not
    see the first, so the trace refuses such a model and names the fix."""
    from diffmas.testing import tiny_backbone

    bb = tiny_backbone("llama")
    bb.model.gradient_checkpointing_enable()
    with pytest.raises(ValueError, match="gradient_checkpointing_disable"):
        LatentTrace(bb.model, 1)
    bb.model.gradient_checkpointing_disable()
    LatentTrace(bb.model, 1)


def test_observe_reports_every_forward_and_head_while_the_block_runs():
    from collections import Counter

    from diffmas.testing import tiny_backbone
    from diffmas.trace import observe

    bb = tiny_backbone("llama")
    seen: Counter[str] = Counter()
    realigner = build_realigner("norm", bb.model)
    with torch.no_grad(), observe(lambda phase, seconds: seen.update([phase]) if seconds >= 0 else None):
        trace = LatentTrace(bb.model, 2)
        trace.append_tokens([[1, 2, 3], [4, 5]], "planner")
        trace.latent_steps(3, realigner, "planner")
        hidden = trace.append_tokens([[6, 7], [8]], "solver", "answer")
        trace.logits(hidden[:, -1])
    assert seen == Counter({"prompt": 1, "latent": 3, "answer": 1, "head": 1})
    with torch.no_grad():
        trace.append_tokens([[9], [9]], "solver", "answer")  # after the block: nobody is told
    assert sum(seen.values()) == 6
