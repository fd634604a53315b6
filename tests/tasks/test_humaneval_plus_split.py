"""HumanEval+ leaves out the 50 HumanEval problems the paper trains on, by the same split as `humaneval`."""

from __future__ import annotations

import json

import pytest

from diffmas.tasks import get_task
from diffmas.tasks.humaneval import HUMANEVAL_IDS


def _fixture(tmp_path):
    rows = [
        {"task_id": tid, "prompt": f"def f{i}():\n", "canonical_solution": "    return 1\n",
         "entry_point": f"f{i}", "test": "def check(c):\n    assert c() == 1\n"}
        for i, tid in enumerate(HUMANEVAL_IDS)
    ]  # fmt: skip
    path = tmp_path / "hep.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("seed", [0, 3])
def test_humaneval_plus_test_split_excludes_the_humaneval_train_problems(tmp_path, seed):
    task = get_task("humaneval-plus", path=_fixture(tmp_path), train_seed=seed)
    train = get_task("humaneval", seed=seed).train_ids(list(HUMANEVAL_IDS))
    ids = [it.id for it in task.load("test")]
    assert len(ids) == 114 and not set(ids) & train
    assert set(ids) | train == set(HUMANEVAL_IDS)
    assert len(task.load("all")) == 164
    assert task.sizes == {"test": 114, "all": 164}


def test_humaneval_plus_can_keep_every_problem(tmp_path):
    task = get_task("humaneval-plus", path=_fixture(tmp_path), exclude_train=False)
    assert len(task.load("test")) == 164
