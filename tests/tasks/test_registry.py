"""The registry knows every task family; constructing a task never downloads; `diffmas tasks` lists them."""

from __future__ import annotations

import pytest

from diffmas.tasks import get_task, registered_prefixes, registered_tasks
from diffmas.tasks.base import ANSWER_TYPES

EXPECTED = {
    "humaneval", "gsm8k-100", "gsm-symbolic", "champ", "strategyqa", "date_understanding",
    "logical_deduction_three_objects", "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "causal_judgment", "navigate", "gsm8k", "math500", "aime24", "aime25", "gpqa-diamond", "arc-easy",
    "arc-challenge", "openbookqa", "commonsenseqa", "medqa", "humaneval-plus", "mbpp-plus",
}  # fmt: skip


def test_every_task_is_registered():
    assert set(registered_tasks()) >= EXPECTED
    assert {"gym", "bigbench"} <= set(registered_prefixes())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_construction_is_cheap_and_described(name, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))  # an empty cache: nothing may be fetched here
    task = get_task(name)
    assert task.answer_type in ANSWER_TYPES
    assert task.source
    assert task.splits()
    assert not any(tmp_path.iterdir())


def test_prefixed_specs():
    gym = get_task("gym:basic_arithmetic", size=5, seed=3)
    assert gym.name == "gym:basic_arithmetic" and gym.answer_type == "gym"
    bb = get_task("bigbench:logical_deduction/three_objects")
    assert bb.task == "logical_deduction/three_objects"
    with pytest.raises(ValueError, match="give a name"):
        get_task("gym:")


def test_unknown_task_lists_prefixes():
    with pytest.raises(ValueError, match=r"gym:<name>"):
        get_task("no-such-task")


def test_humaneval_split_sizes_are_known_without_loading():
    task = get_task("humaneval")
    assert task.sizes == {"train": 50, "test": 114, "all": 164}
    assert get_task("humaneval", train_size=20).sizes["test"] == 144


def test_tasks_command_lists_everything(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFMAS_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    from diffmas.cli.tasks_cmd import task_rows, tasks_command

    rows = {r[0]: r for r in task_rows()}
    assert set(rows) >= EXPECTED
    assert rows["humaneval"][2] == "train 50, test 114, all 164"
    assert rows["humaneval"][3] == "code"
    assert rows["aime24"][1].startswith("hub ")
    assert "gym:<name>" in rows and "bigbench:<name>" in rows
    tasks_command(sizes=False)
    out = capsys.readouterr().out
    assert "gsm8k-100" in out and "answer type" in out
    assert not any(tmp_path.iterdir())
