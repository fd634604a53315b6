"""The trainer's held-out evaluation is `diffmas eval`'s loop: same answers, same grades, any batch size."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffmas.evaluation import EvalConfig, answer_items, batches_of, longest_first, run_eval
from diffmas.grading import Grade
from diffmas.methods import MethodConfig, get_method
from diffmas.records import read_jsonl
from diffmas.roles import RoleChain
from diffmas.tasks import get_task
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _by_length(self, output: str, item) -> Grade:
    """A grade that depends on the exact answer text, so a random tiny model scores neither 0 nor 1."""
    return Grade(len(output) % 2 == 0, output)


def _cfg(tmp_path, method: str, **run) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": "test", "n_eval": 5},
            "method": {
                "method": method,
                "latent_steps": 2,
                "eval_max_new_tokens": 6,
                "upstream_max_new_tokens": 4,
            },
            "optim": {"steps": 2, "batch_size": 2, "lr": 5e-3, "warmup_steps": 1},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100, **run},
        }
    )


@pytest.mark.parametrize(
    ("trained", "decoded_by"),
    [("single_sft", "single"), ("text_mas_sft", "text_mas"), ("diffmas", "latent_mas")],
)
def test_in_training_eval_equals_run_eval_on_the_saved_adapter(tmp_path, monkeypatch, trained, decoded_by):
    monkeypatch.setattr("diffmas.tasks.base.Task.grade", _by_length)
    trainer = DiffMASTrainer(_cfg(tmp_path, trained, eval_batch_size=2), backbone=tiny_backbone("llama"))
    trainer.setup()
    result = trainer.train()
    assert result["eval"]["eval_n"] == 5
    out = tmp_path / "eval"
    summary = run_eval(
        EvalConfig(
            task=ASSET, method=decoded_by, split="test", limit=5, batch_size=3, adapter=result["adapter"],
            latent_steps=2, max_new_tokens=6, upstream_max_new_tokens=4, out=str(out),
        ),
        backbone=tiny_backbone("llama"),
    )  # fmt: skip
    correct = [r["correct"] for r in read_jsonl(out / "samples.jsonl")]
    assert summary["n"] == len(correct) == 5
    assert result["eval"]["eval_accuracy"] == pytest.approx(sum(correct) / 5)
    if trained == "single_sft":  # the tiny model's answers differ in length: the comparison can fail
        assert 0 < sum(correct) < 5


def test_the_eval_batch_size_does_not_change_the_result_and_resumes_old_runs(tmp_path, monkeypatch):
    monkeypatch.setattr("diffmas.tasks.base.Task.grade", _by_length)
    evals = []
    for size in (1, 8):
        trainer = DiffMASTrainer(
            _cfg(tmp_path / str(size), "single_sft", eval_batch_size=size), backbone=tiny_backbone("llama")
        )
        trainer.setup()
        evals.append(trainer.evaluate())
    assert evals[0] == evals[1] and evals[0]["eval_n"] == 5
    a = _cfg(tmp_path, "single_sft").resume_key()
    b = _cfg(tmp_path, "single_sft", eval_batch_size=3).resume_key()
    assert a == b  # a resumed run may answer in other batches; one written before the field existed resumes


def test_answer_items_shards_batches_and_grades_after_the_think_block(monkeypatch):
    task = get_task(ASSET)
    items = task.load("test")
    backbone = tiny_backbone("llama")
    method = get_method("single", backbone, RoleChain.load(None), MethodConfig(max_new_tokens=6))
    monkeypatch.setattr("diffmas.tasks.base.Task.grade", _by_length)
    whole = answer_items(method, task, items, 2)
    assert len(whole) == len(items) == 5
    assert answer_items(method, task, items, 1) == whole
    shards = [answer_items(method, task, items, 2, rank, 2) for rank in (0, 1)]
    # batched as `diffmas eval` batches: longest first, every world-th batch; graded in the items' order
    position = {it.id: i for i, it in enumerate(items)}
    batches = batches_of(longest_first(items, task, backbone.tokenizer), 2)
    mine = [
        sorted(position[it.id] for it in batches[0] + batches[2]),
        sorted(position[it.id] for it in batches[1]),
    ]
    assert shards == [[whole[i] for i in mine[0]], [whole[i] for i in mine[1]]]
    assert [len(b) for b in batches_of(items, 2, 1, 2)] == [2]

    class Thinking:
        backbone = method.backbone

        def run(self, questions, fmt, generator=None, views=None):
            from types import SimpleNamespace

            return [SimpleNamespace(text="<think>odd</think>ab") for _ in questions]

    assert answer_items(Thinking(), task, items, 3) == [True] * 5  # "ab" graded, not the draft
