"""`batch_size: auto`: each method bounds its trace's columns, and the evaluation fills a KV budget with as many
questions as fit, with the same answers as one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffmas.evaluation import EvalConfig, resolve_batch_size, run_eval
from diffmas.memory import kv_bytes_per_column
from diffmas.methods import get_method
from diffmas.records import read_jsonl
from diffmas.tasks import get_task
from diffmas.testing import tiny_backbone

ASSET = Path(__file__).parents[1] / "assets" / "arith.jsonl"


@pytest.fixture(scope="module")
def qwen2():
    return tiny_backbone("qwen2")


# `trace_columns` bounds every trace and an answer allocates its trace once: tests/core/test_method_contract.py,
# for every registered method.


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
