"""The static answer: a cache of fixed shape with each row's readable KV compacted, so the decode step can be
compiled once. It must give the dynamic loop's answers (batched and one at a time, in both channels, on sliding
and mixed-layer models), hold exactly the readable columns, release the trace, and keep one shape per answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from diffmas.decoding import DecodeConfig, Decoded, decode
from diffmas.realign import build_realigner
from diffmas.testing import tiny_backbone, tiny_family, tiny_tokenizer
from diffmas.trace import LatentTrace, StaticAnswer

QUESTIONS = ("two plus two", "a longer question about apples and pears", "x", "what is the capital of France")


def _upstream(model, tokenizer, questions, channel="full") -> LatentTrace:
    """A planner's prompt (pads at the start) and 3 latent steps: the Solver's prompt then adds pads mid-trace."""
    trace = LatentTrace(model, len(questions), channel=channel)
    trace.append_tokens([tokenizer.encode("plan: " + q) for q in questions], "planner")
    trace.latent_steps(3, build_realigner("norm", model), "planner")
    return trace


def _answers(model, tokenizer, questions, config, channel="full", stop_ids=(), sync_every=1, generator=None):
    with torch.no_grad():
        trace = _upstream(model, tokenizer, questions, channel)
        prompts = [tokenizer.encode(q[::-1]) for q in questions]
        return decode(
            trace, prompts, "solver", tokenizer, config, set(stop_ids), generator, sync_every=sync_every
        )


def _same(a: Decoded, b: Decoded, atol: float = 1e-4) -> None:
    assert a.token_ids == b.token_ids
    assert (a.text, a.stopped, a.matched, a.trace_len) == (b.text, b.stopped, b.matched, b.trace_len)
    torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=atol, rtol=atol)
    torch.testing.assert_close(torch.tensor(a.entropies), torch.tensor(b.entropies), atol=atol, rtol=atol)


def _stop_id_ending_rows_apart(model, tokenizer, channel) -> int:
    free = _answers(model, tokenizer, QUESTIONS, DecodeConfig(max_new_tokens=16), channel)
    for d in free:
        for t in d.token_ids[2:8]:
            if sum(t in e.token_ids for e in free) < len(free):
                return t
    raise AssertionError("no token distinguishes the answers")


@pytest.mark.parametrize("channel", ["full", "latents"])
@pytest.mark.parametrize(("family", "sync_every"), [("llama", 1), ("qwen2", 3)])
def test_static_answers_equal_the_dynamic_loops_batched_and_alone(family, sync_every, channel):
    backbone = tiny_backbone(family)
    model, tok = backbone.model, backbone.tokenizer
    stop = _stop_id_ending_rows_apart(model, tok, channel)
    for config in (
        DecodeConfig(max_new_tokens=14),
        DecodeConfig(max_new_tokens=14, stop_pattern=r"[\s\S]{9}"),
    ):
        static = DecodeConfig(**{**config.__dict__, "static_cache": True})
        dynamic = _answers(model, tok, QUESTIONS, config, channel, {stop}, sync_every)
        batched = _answers(model, tok, QUESTIONS, static, channel, {stop}, sync_every)
        assert any(d.stopped or d.matched for d in dynamic)  # rows end apart: the static batch keeps them
        assert len({len(d.token_ids) for d in dynamic}) > 1
        for question, a, b in zip(QUESTIONS, dynamic, batched):
            _same(a, b)
            _same(a, _answers(model, tok, [question], static, channel, {stop}, sync_every)[0])


@pytest.mark.parametrize("family", ["mistral", "gemma3", "qwen3"])
def test_static_answers_slide_on_positions_like_the_trace(family):
    """A window of 5 positions, shorter than every trace: sliding layers (all of Mistral's; Gemma 3's and Qwen 3's
    alternate with full ones, a dict of masks) must drop the same keys in the compacted store."""
    model, tok = tiny_family(family, sliding_window=5), tiny_tokenizer()
    config = DecodeConfig(max_new_tokens=10)
    dynamic = _answers(model, tok, QUESTIONS, config)
    static = _answers(model, tok, QUESTIONS, DecodeConfig(max_new_tokens=10, static_cache=True))
    for a, b in zip(dynamic, static):
        _same(a, b)
    wide = _answers(tiny_family(family), tok, QUESTIONS, config)
    assert [d.token_ids for d in wide] != [d.token_ids for d in dynamic]  # the window matters here


@pytest.mark.parametrize("channel", ["full", "latents"])
def test_the_store_holds_each_rows_readable_columns_compacted(llama, channel):
    tok = llama.tokenizer
    with torch.no_grad():
        trace = _upstream(llama.model, tok, QUESTIONS, channel)
        # the longest planner row gets the shortest Solver prompt: per-segment pads add up to more than any row
        trace.append_tokens([tok.encode(q) for q in reversed(QUESTIONS)], "solver")
        readable = trace.visible_mask("solver").bool()
        keys = [layer.keys.clone() for layer in trace.cache.layers]
        positions, width = trace.key_positions.clone(), trace.width
        answer = StaticAnswer(trace, "solver", max_new_tokens=7)
    counts = readable.sum(dim=1)
    held = int(counts.max())
    assert answer.capacity == held + 7 and answer.column == held
    if channel == "latents":  # the planner's prompt is left out for the Solver
        assert held < int(trace.real_lengths.max()) < width
    else:
        assert held == int(trace.real_lengths.max()) < width  # the pads between segments are gone
    for row in range(len(QUESTIONS)):
        n = int(counts[row])
        slots = answer.visible[row].nonzero().flatten().tolist()
        assert slots == list(range(n))  # at the front, in trace order; nothing written past the prompt
        source = readable[row].nonzero().flatten()
        assert answer.key_positions[row, :n].tolist() == positions[row, source].tolist()
        for layer, k in zip(answer.cache.layers, keys):
            torch.testing.assert_close(layer.keys[row, :, :n], k[row, :, source])
            assert not layer.keys[row, :, held:].any()  # the answer's columns, unwritten


def test_the_trace_is_consumed_and_its_store_released(llama):
    tok = llama.tokenizer
    with torch.no_grad():
        trace = _upstream(llama.model, tok, QUESTIONS)
        trace.append_tokens([tok.encode(q) for q in QUESTIONS], "solver")
        trace.static_answer("solver", 5)
        assert all(not layer.is_initialized for layer in trace.cache.layers)
        with pytest.raises(RuntimeError, match="handed to a static answer"):
            trace.append_step(torch.tensor([5, 6, 7, 8]), "solver")
        for edit in (
            lambda: trace.static_answer("solver", 5),
            lambda: trace.keep_rows([0]),
            lambda: trace.compact("solver", force=True),
            lambda: LatentTrace.concatenate([trace]),
        ):
            with pytest.raises(RuntimeError, match="handed to a static answer"):
                edit()


def test_a_bad_readback_interval_is_refused_before_the_trace_is_touched(llama):
    tok = llama.tokenizer
    with torch.no_grad():
        trace = _upstream(llama.model, tok, QUESTIONS)
        width = trace.width
        for config in (DecodeConfig(max_new_tokens=4), DecodeConfig(max_new_tokens=4, static_cache=True)):
            with pytest.raises(ValueError, match="sync_every"):
                decode(trace, [tok.encode(q) for q in QUESTIONS], "solver", tok, config, set(), sync_every=0)
            assert trace.width == width and trace._consumed_by is None


def test_refusals_name_the_problem(llama):
    tok = llama.tokenizer
    with torch.no_grad():
        trace = _upstream(llama.model, tok, QUESTIONS[:1])
    with pytest.raises(RuntimeError, match="no_grad"):
        StaticAnswer(trace, "solver", 5)
    with torch.no_grad():
        with pytest.raises(ValueError, match="max_new_tokens"):
            StaticAnswer(trace, "solver", 0)
        with pytest.raises(ValueError, match="compile mode"):
            StaticAnswer(trace, "solver", 5, compile_mode="fast")  # type: ignore[arg-type]
        config = trace.parts.config
        kernel = config._attn_implementation
        config._attn_implementation = "flash_attention_2"
        try:
            with pytest.raises(ValueError, match="flash_attention_2"):
                StaticAnswer(trace, "solver", 5)
        finally:
            config._attn_implementation = kernel
        with pytest.raises(ValueError, match="prompt"):
            StaticAnswer(LatentTrace(llama.model, 1), "solver", 5)
    with pytest.raises(ValueError, match="compile"):
        DecodeConfig(compile="fast")  # type: ignore[arg-type]
    assert DecodeConfig(compile="default").static and not DecodeConfig().static


def test_the_step_has_one_shape_for_the_whole_answer(llama):
    """Captured by dynamo with a counting backend (no compiler needed): one graph for every step of an answer,
    finished rows included, where the dynamic loop's growing cache changes shape at every token."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    tok = llama.tokenizer
    with torch.no_grad():
        trace = _upstream(llama.model, tok, QUESTIONS)
        hidden = trace.append_tokens([tok.encode(q[::-1]) for q in QUESTIONS], "solver")
        logits = trace.logits(hidden[:, -1]).float()
        answer = trace.static_answer("solver", 12)
        answer._forward = torch.compile(StaticAnswer._column, backend=counter, dynamic=False)
        tokens = []
        for _ in range(12):
            token = logits.argmax(dim=-1)
            tokens.append(token)
            logits = answer.step(token)
    assert counter.frame_count == 1
    eager = _answers(llama.model, tok, QUESTIONS, DecodeConfig(max_new_tokens=12))
    assert torch.stack(tokens, dim=1).tolist() == [d.token_ids for d in eager]
    with pytest.raises(RuntimeError, match="full"):
        answer.step(token)
    torch._dynamo.reset()


def test_sampled_static_answers_are_seeded_and_draw_the_dynamic_loops_tokens_while_no_row_leaves(llama):
    tok = llama.tokenizer
    sampled = dict(max_new_tokens=10, temperature=1.0, top_p=0.9)

    def run(seed, static):
        config = DecodeConfig(**sampled, static_cache=static)
        return _answers(llama.model, tok, QUESTIONS, config, generator=torch.Generator().manual_seed(seed))

    first, again, dynamic, other = run(3, True), run(3, True), run(3, False), run(4, True)
    for a, b, c in zip(first, again, dynamic):
        _same(a, b)
        _same(a, c)  # no stop: every row draws every step in both loops
    assert [d.token_ids for d in first] != [d.token_ids for d in other]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_answers_equal_eager_and_compile_once_for_answers_of_one_bucket(llama, mode):
    """A real inductor compile (~40 s on 2 cores): greedy answers equal the dynamic loop's, and a second batch of
    another trace width but the same store bucket reuses the graph; under reduce-overhead (CUDA graphs on a GPU)
    it reuses the first answer's store too, at the same addresses."""
    import torch._dynamo.utils as dynamo_utils

    from diffmas.trace import _REUSED, release_static_buffers

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    release_static_buffers()
    tok = llama.tokenizer
    compiled = DecodeConfig(max_new_tokens=16, compile=mode)
    stores: list = []  # each compiled answer's own store
    init = StaticAnswer.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        stores.append((self.cache, self.cache.layers[0].keys.data_ptr()))

    StaticAnswer.__init__ = recording  # type: ignore[method-assign]
    try:
        for questions in (QUESTIONS, tuple(q + " please" for q in QUESTIONS)):
            eager = _answers(llama.model, tok, questions, DecodeConfig(max_new_tokens=16))
            for a, b in zip(eager, _answers(llama.model, tok, questions, compiled)):
                _same(a, b, atol=1e-3)
    finally:
        StaticAnswer.__init__ = init  # type: ignore[method-assign]
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1
    assert len(stores) == 2
    if mode == "reduce-overhead":  # CUDA graphs' mode: the second answer decodes on the first one's store
        assert stores[0][0] is stores[1][0] and stores[0][1] == stores[1][1] and len(_REUSED) == 1
    else:
        assert stores[0][0] is not stores[1][0] and len(_REUSED) == 0
    release_static_buffers()
    torch._dynamo.reset()


# Every registered method answers alike on the static cache: tests/core/test_method_contract.py.


def test_an_eval_directory_resumes_across_the_static_cache_switch(llama, tmp_path):
    """`static_cache` and `compile` change how greedy answers are computed, not what: not part of the results key
    (of a sampled evaluation's, they are)."""
    from diffmas.evaluation import EvalConfig, run_eval
    from diffmas.records import read_jsonl

    asset = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")
    base = dict(
        task=asset, method="latent_mas", latent_steps=2, max_new_tokens=5, batch_size=2, out=str(tmp_path)
    )
    run_eval(EvalConfig(**base, limit=2), backbone=llama)
    run_eval(EvalConfig(**base, limit=4, static_cache=True), backbone=llama)
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert [r["id"] for r in rows] == ["a1", "a2", "a3", "a4"]
    run_eval(EvalConfig(**{**base, "out": str(tmp_path / "plain")}, limit=4), backbone=llama)
    plain = read_jsonl(tmp_path / "plain" / "samples.jsonl")
    assert [r["output"] for r in rows] == [r["output"] for r in plain]
    assert EvalConfig(**base, compile="reduce-overhead").results_key() == EvalConfig(**base).results_key()
    # sampled answers part from the dynamic loop's once a row finishes: then the switch is part of the key
    for sampling in ({"temperature": 0.7}, {"samples": 3}):
        dynamic = EvalConfig(**base, **sampling).results_key()
        assert EvalConfig(**base, **sampling, static_cache=True).results_key() != dynamic
        assert EvalConfig(**base, **sampling, compile="default").results_key() != dynamic
    with pytest.raises(ValueError, match="compile"):
        EvalConfig(**base, compile="fastest")


# ---------------------------------------------------------------- the dynamic trace, compacted for its answer


def _greedy_steps(
    trace: LatentTrace, logits: torch.Tensor, steps: int
) -> tuple[list[list[int]], torch.Tensor]:
    tokens, logps = [], []
    for _ in range(steps):
        token = logits.argmax(dim=-1)
        tokens.append(token)
        logps.append(torch.log_softmax(logits, dim=-1))
        logits = trace.logits(trace.append_step(token, "solver")[:, -1]).float()
    return torch.stack(tokens, dim=1).tolist(), torch.stack(logps, dim=1)


@pytest.mark.parametrize("channel", ["full", "latents"])
def test_compacting_keeps_the_readable_columns_in_place_and_the_answers(llama, channel):
    tok = llama.tokenizer
    solver = [tok.encode(q) for q in reversed(QUESTIONS)]  # per-segment pads add up past the longest row
    with torch.no_grad():
        plain = _upstream(llama.model, tok, QUESTIONS, channel)
        plain_logits = plain.logits(plain.append_tokens(solver, "solver")[:, -1]).float()
        trace = _upstream(llama.model, tok, QUESTIONS, channel)
        logits = trace.logits(trace.append_tokens(solver, "solver")[:, -1]).float()
        readable = trace.visible_mask("solver").bool()
        keys = trace.cache.layers[0].keys.clone()
        stores = [layer._key_store.data_ptr() for layer in trace.cache.layers]
        width, positions = trace.width, trace.key_positions.clone()
        removed = trace.compact("solver", reserve=12, force=True)
        counts = readable.sum(dim=1)
        assert removed == width - int(counts.max()) > 0 and trace.width == int(counts.max())
        assert [layer._key_store.data_ptr() for layer in trace.cache.layers] == stores  # in place
        assert trace.real_lengths.tolist() == counts.tolist()
        for row in range(len(QUESTIONS)):
            n, source = int(counts[row]), readable[row].nonzero().flatten()
            assert trace.attention_mask[row].tolist() == [1] * n + [0] * (trace.width - n)
            assert trace.key_positions[row, :n].tolist() == positions[row, source].tolist()
            torch.testing.assert_close(trace.cache.layers[0].keys[row, :, :n], keys[row, :, source])
        assert [(s.role, s.start, s.end) for s in trace.segments] == [("solver", 0, trace.width)]
        compacted, logps = _greedy_steps(trace, logits, 12)
        expected, plain_logps = _greedy_steps(plain, plain_logits, 12)
    assert compacted == expected
    torch.testing.assert_close(logps, plain_logps, atol=1e-4, rtol=1e-4)


def test_compacting_a_trace_to_equal_lengths_drops_the_mask(llama):
    """Rows of equal totals but other per-segment lengths: padded per segment, dense once compacted, so the
    answer's forwards pass no mask and equal each question alone."""
    masks = []
    body = llama.model.get_decoder()
    hook = body.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    config = DecodeConfig(max_new_tokens=8)
    with torch.no_grad():
        try:
            trace = LatentTrace(llama.model, 2)
            trace.append_tokens([[5, 6, 7], [8, 9, 10, 11, 12]], "planner")
            trace.latent_steps(2, build_realigner("norm", llama.model), "planner")
            out = decode(
                trace, [[13, 14, 15, 16, 17], [18, 19, 20]], "solver", llama.tokenizer, config, set()
            )
        finally:
            hook.remove()
        assert trace.width == 10 + 8 - 1 and not trace.attention_mask.eq(0).any()
        assert all(m is None for m in masks[-7:])  # every answer step
        for i, (up, own) in enumerate(
            [([5, 6, 7], [13, 14, 15, 16, 17]), ([8, 9, 10, 11, 12], [18, 19, 20])]
        ):
            alone = LatentTrace(llama.model, 1)
            alone.append_tokens([up], "planner")
            alone.latent_steps(2, build_realigner("norm", llama.model), "planner")
            _same(out[i], decode(alone, [own], "solver", llama.tokenizer, config, set())[0])


def test_compacting_is_skipped_where_the_copy_costs_more_than_it_saves_and_refused_under_grad(llama):
    tok = llama.tokenizer
    with torch.no_grad():
        trace = _upstream(llama.model, tok, QUESTIONS)
        trace.append_tokens([tok.encode(q) for q in reversed(QUESTIONS)], "solver")
        width, held = trace.width, int(trace.real_lengths.max())
        assert trace.compact("solver", reserve=1) == 0 and trace.width == width  # 1 step saves too little
        needed = -(-2 * held // (width - held))  # steps for which the smaller cache repays its copy
        assert trace.compact("solver", reserve=needed - 1) == 0
        assert trace.compact("solver", reserve=needed) == width - held
        assert trace.compact("solver", reserve=1000) == 0  # nothing left to remove
    graph = _upstream(llama.model, tok, QUESTIONS)  # built under autograd: its keys carry a graph
    with pytest.raises(RuntimeError, match="no_grad"):
        graph.compact("solver", force=True)
    with torch.no_grad(), pytest.raises(RuntimeError, match="no graph"):
        graph.compact("solver", force=True)


@pytest.mark.parametrize("trainable", ["v_proj of every layer", "k_proj of the last layer"])
def test_a_graph_in_any_layers_keys_or_values_refuses_compaction(trainable):
    """LoRA on v_proj alone (PEFT's default for Llama is q/v) leaves the keys graph-free: the values carry it."""
    backbone = tiny_backbone("llama")
    model, tok = backbone.model, backbone.tokenizer
    model.requires_grad_(False)
    layers = model.model.layers
    last_k = [layers[-1].self_attn.k_proj]
    proj = [layer.self_attn.v_proj for layer in layers] if trainable.startswith("v") else last_k
    for p in proj:
        p.weight.requires_grad_(True)
    trace = LatentTrace(model, len(QUESTIONS))  # prompts only: the first layer's keys see no trained weight
    trace.append_tokens([tok.encode("plan: " + q) for q in QUESTIONS], "planner")
    trace.append_tokens([tok.encode(q) for q in reversed(QUESTIONS)], "solver")
    assert not trace.cache.layers[0].keys.requires_grad and trace.has_graph
    with torch.no_grad(), pytest.raises(RuntimeError, match="no graph"):
        trace.compact("solver", force=True)


def _static_tokens(model, tok, questions, steps=6, **kwargs) -> tuple[list[list[int]], StaticAnswer]:
    trace = _upstream(model, tok, questions)
    trace.append_tokens([tok.encode(q[::-1]) for q in questions], "solver")
    answer = trace.static_answer("solver", steps, **kwargs)
    token = torch.zeros(len(questions), dtype=torch.long)
    out = []
    for _ in range(steps):
        token = answer.step(token).argmax(dim=-1)
        out.append(token.tolist())
    return out, answer


def test_reused_buffers_keep_their_addresses_and_give_a_fresh_stores_answers(llama):
    """For CUDA graphs (replayed on recorded addresses): the next answer of a shape reuses the last one's store,
    reset in place; never a store a live answer still reads; another shape replaces it; release frees it."""
    from diffmas.trace import _REUSED, release_static_buffers

    model, tok = llama.model, llama.tokenizer
    release_static_buffers()
    with torch.no_grad():
        fresh, _ = _static_tokens(model, tok, QUESTIONS)
        first, answer = _static_tokens(model, tok, QUESTIONS, reuse_buffers=True)
        address = (answer.cache.layers[0].keys.data_ptr(), answer.visible.data_ptr())
        live, other = _static_tokens(
            model, tok, QUESTIONS, reuse_buffers=True
        )  # `answer` is alive: not shared
        assert other.cache.layers[0].keys.data_ptr() != address[0]
        del answer, other
        again, answer = _static_tokens(model, tok, QUESTIONS, reuse_buffers=True)
        assert (answer.cache.layers[0].keys.data_ptr(), answer.visible.data_ptr()) == address
        assert fresh == first == live == again  # the reset store answers like a new one
        del answer
        _static_tokens(model, tok, QUESTIONS[:2], reuse_buffers=True)  # another shape takes the place
        assert len(_REUSED) == 1 and next(iter(_REUSED.values())).shape[0] == 2
        _static_tokens(model, tok, QUESTIONS)  # not asked to reuse: nothing kept, nothing taken
        assert next(iter(_REUSED.values())).shape[0] == 2
    release_static_buffers(model)
    assert len(_REUSED) == 0
