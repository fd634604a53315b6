"""Training from Python data (a list of dicts or Items, a `datasets.Dataset`) and the logging callback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmas.data import items_task
from diffmas.tasks.base import Item
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ROWS = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "assets" / "arith.jsonl").read_text().splitlines()
]


def _cfg(tmp_path, eval_split=None, **run) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": "my-arith", "split": "train", "eval_split": eval_split, "n_eval": 2},
            "method": {"latent_steps": 1, "eval_max_new_tokens": 3},
            "optim": {"steps": 4, "batch_size": 2, "lr": 1e-2, "warmup_steps": 0},
            "run": {"out": str(tmp_path / "run"), "report_to": [], "save_every": 100, **run},
        }
    )


def _train(cfg, **data):
    logged: list[dict] = []
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"), callbacks=[logged.append], **data)
    trainer.setup()
    return trainer, trainer.train(), logged


def test_training_from_a_list_of_dicts_learns_and_calls_back_every_logged_row(tmp_path):
    trainer, result, logged = _train(_cfg(tmp_path, eval_split="test"), train_data=ROWS, eval_data=ROWS[:2])
    losses = [row["loss"] for row in logged if "loss" in row]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert logged == result["history"]  # the callback saw what the history holds, row by row
    assert any("eval_accuracy" in row for row in logged)  # the end-of-run evaluation on eval_data
    assert trainer.task.name == "my-arith" and {it.question for it in trainer.items} <= {
        r["question"] for r in ROWS
    }
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_training_from_items_and_from_a_dataset(tmp_path):
    from datasets import Dataset

    items = [Item(id=f"i{i}", question=r["question"], answer=str(r["answer"])) for i, r in enumerate(ROWS)]
    _, from_items, _ = _train(_cfg(tmp_path / "a"), train_data=items)
    _, from_dataset, _ = _train(_cfg(tmp_path / "b"), train_data=Dataset.from_list(ROWS))
    for result in (from_items, from_dataset):
        assert len([r for r in result["history"] if "loss" in r]) == 4


def test_bad_rows_and_a_missing_eval_set_are_errors_that_say_so(tmp_path):
    with pytest.raises(ValueError, match="missing field 'answer'"):
        items_task([{"question": "q"}])
    with pytest.raises(TypeError, match="dict or an Item"):
        items_task(["just a string"])
    with pytest.raises(ValueError, match="no eval data was given"):
        DiffMASTrainer(
            _cfg(tmp_path, eval_split="test"), backbone=tiny_backbone("llama"), train_data=ROWS
        ).setup()
