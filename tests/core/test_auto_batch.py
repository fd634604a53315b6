"""`batch_size: auto`: each method bounds its trace's columns, and the evaluation fills a KV budget with as many
questions as fit, with the same answers as one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffmas.evaluation import EvalConfig, resolve_batch_size, run_eval
from diffmas.memory import kv_bytes_per_column
from diffmas.methods import MethodConfig, get_method
from diffmas.records import read_jsonl
from diffmas.tasks import get_task
from diffmas.testing import tiny_backbone

ASSET = Path(__file__).parents[1] / "assets" / "arith.jsonl"
METHODS = ("single", "latent_mas", "text_mas", "stitch_mas", "single_latent", "no_comm")


@pytest.fixture(scope="module")
def qwen2():
    return tiny_backbone("qwen2")


@pytest.mark.parametrize("name", METHODS)
def test_trace_columns_bound_every_trace_the_method_builds(qwen2, name):
    task = get_task(str(ASSET))
    items = task.load("test")[:4]
    config = MethodConfig(latent_steps=3, max_new_tokens=6, upstream_max_new_tokens=5)
    method = get_method(name, qwen2, None, config)
    questions = [task.render_question(it) for it in items]
    bound = method.trace_columns(questions, task.format_instruction)
    with torch.no_grad():
        outs = [method.run([q], task.format_instruction)[0] for q in questions]  # no pads: real columns only
    longest = max(o.trace_len + 1 for o in outs)  # the last answer token is never fed back
    assert longest <= bound
    assert bound - longest <= 6 + 3 * 9  # an upper bound, not a wild one (the answer and text budgets)


def _cfg(tmp_path, **kw) -> EvalConfig:
    base = dict(
        task=str(ASSET), method="latent_mas", latent_steps=2, max_new_tokens=5, limit=5, out=str(tmp_path)
    )
    return EvalConfig(**{**base, **kw})


def test_auto_fills_the_budget_and_answers_as_one_at_a_time(qwen2, tmp_path):
    task = get_task(str(ASSET))
    items = task.load("test")
    probe = _cfg(tmp_path / "probe", batch_size="auto", kv_budget_gib=1.0)
    method = get_method("latent_mas", qwen2, None, probe.method_config(answer_stop=task.answer_stop))
    columns = method.trace_columns([task.render_question(i) for i in items], task.format_instruction)
    per_question = kv_bytes_per_column(qwen2.model.config, torch.float32) * columns
    budget = (3 * per_question + per_question // 2) / 2**30  # room for 3.5 traces: 3 questions a batch
    auto = _cfg(tmp_path / "auto", batch_size="auto", kv_budget_gib=budget)
    assert resolve_batch_size(auto, method, task, items) == 3
    summary = run_eval(auto, backbone=qwen2)
    assert summary["batch_size"] == 3
    run_eval(_cfg(tmp_path / "one", batch_size=1), backbone=qwen2)
    got = read_jsonl(tmp_path / "auto" / "samples.jsonl")
    want = read_jsonl(tmp_path / "one" / "samples.jsonl")
    assert [r["output"] for r in got] == [r["output"] for r in want] and len(got) == 5  # batches of 3, 2
    # under CUDA graphs one answer's store is kept between answers: the budget holds half as many traces
    graphs = _cfg(tmp_path / "graphs", batch_size="auto", kv_budget_gib=budget, compile="reduce-overhead")
    assert resolve_batch_size(graphs, method, task, items) == 1


def test_auto_caps_at_the_questions_left(qwen2, tmp_path):
    summary = run_eval(_cfg(tmp_path, batch_size="auto", kv_budget_gib=4.0, limit=4), backbone=qwen2)
    assert summary["batch_size"] == 4


def test_a_budget_below_one_question_is_an_error_naming_it(qwen2, tmp_path):
    with pytest.raises(ValueError, match=r"kv_budget_gib 1e-06.*exceeds the budget"):
        run_eval(_cfg(tmp_path, batch_size="auto", kv_budget_gib=1e-6), backbone=qwen2)
    assert not (tmp_path / "eval_config.json").exists()  # nothing claimed the directory


def test_auto_on_cpu_without_a_budget_is_refused_before_anything_loads():
    with pytest.raises(ValueError, match="kv_budget_gib"):
        EvalConfig(task=str(ASSET), batch_size="auto", device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(task=str(ASSET), batch_size="many")


@pytest.mark.parametrize(
    "name", ("single", "latent_mas", "single_latent", "no_comm", "donor", "latent_donor")
)
def test_an_answer_allocates_its_trace_once(qwen2, name):
    """Without grad the trace is allocated once for prompts, latents and the answer budget (no doubling, no
    regrow when decoding starts), and the answers are those of a trace left to grow."""
    from diffmas.trace import GrowingLayer

    task = get_task(str(ASSET))
    items = task.load("test")[:3]
    questions = [task.render_question(it) for it in items]
    config = MethodConfig(latent_steps=4, max_new_tokens=160)  # more than a doubled prompt holds
    method = get_method(name, qwen2, None, config)
    with torch.no_grad():
        trace, _ = method.build_trace(questions, task.format_instruction)
        answers = method.decode_solver(trace, questions, task.format_instruction)
        assert method.capacity(questions, task.format_instruction) == method.trace_columns(
            questions, task.format_instruction
        )
    layers = [layer for layer in trace.cache.layers if isinstance(layer, GrowingLayer)]
    assert layers and all(layer.allocations == 1 for layer in layers), [layer.allocations for layer in layers]
    grown = get_method(name, qwen2, None, config)
    grown.capacity = lambda *a, **k: 0  # the same method, its trace left to double as it grows
    with torch.no_grad():
        trace2, _ = grown.build_trace(questions, task.format_instruction)
        answers2 = grown.decode_solver(trace2, questions, task.format_instruction)
    assert [a.token_ids for a in answers] == [a.token_ids for a in answers2]
    assert max(layer.allocations for layer in trace2.cache.layers) > 1  # what the capacity saves
    assert method.capacity.__self__ is method and torch.is_grad_enabled()
    assert method.capacity(questions, task.format_instruction) == 0  # under autograd the cache concatenates
