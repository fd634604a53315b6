"""BIG-bench example mapping on synthetic task.json content (the real sdist is tested under `slow`)."""

from __future__ import annotations

from diffmas.grading import grade
from diffmas.tasks.bigbench import BigBenchTask


def make(task: str, data: dict) -> BigBenchTask:
    t = BigBenchTask(task)
    t._data = data
    return t


YESNO = {
    "name": "strategyqa",
    "examples": [
        {"input": f"Question {i}?", "target_scores": {"Yes": int(i % 2 == 0), "No": int(i % 2 == 1)}}
        for i in range(10)
    ],
}
MCQ = {
    "name": "date_understanding",
    "task_prefix": "Answer about dates.",
    "examples": [
        {"input": f"Q{i}", "target_scores": {"right": 1, "wrong a": 0, "wrong b": 0, "wrong c": 0}}
        for i in range(20)
    ],
}


def test_yes_no_tasks_become_yesno_items():
    task = make("strategyqa", YESNO)
    items = task.load("all")
    assert task.answer_type == "yesno"
    assert [it.answer for it in items[:2]] == ["yes", "no"]
    assert grade(task, "\\boxed{yes}", items[0]).correct
    assert grade(task, "The answer is no.", items[1]).correct


def test_true_false_targets_are_yes_no():
    data = {
        "task_prefix": "Do you return?",
        "examples": [{"input": "Take 1 step.", "target_scores": {"True": 0, "False": 1}}],
    }
    task = make("navigate", data)
    (item,) = task.load("all")
    assert item.answer == "no" and item.question.startswith("Do you return?")
    assert grade(task, "So the statement is False.", item).correct


def test_mcq_options_are_shuffled_per_item_but_stable():
    task = make("date_understanding", MCQ)
    items = task.load("all")
    assert task.answer_type == "mcq"
    positions = {it.answer for it in items}
    assert len(positions) > 1  # BIG-bench lists the correct option first; we do not
    for it in items:
        assert it.choices["ABCD".index(it.answer)] == "right"
        assert it.question.startswith("Answer about dates.")
    assert [it.choices for it in make("date_understanding", MCQ).load("all")] == [it.choices for it in items]
    assert grade(task, "\\boxed{right}", items[0]).correct


def test_train_test_split_is_seeded_and_disjoint():
    task = make("date_understanding", MCQ)
    train, test = task.load("train"), task.load("test")
    assert len(test) == 4 and len(train) == 16
    assert not {it.id for it in train} & {it.id for it in test}
    assert [it.id for it in make("date_understanding", MCQ).load("test")] == [it.id for it in test]


def test_generative_examples_become_text_items():
    data = {"examples": [{"input": "Capital of France?", "target": ["Paris", "paris"]}]}
    task = make("some_generative", data)
    (item,) = task.load("all")
    assert task.answer_type == "text"
    assert grade(task, "The answer is Paris.", item).correct
    assert not grade(task, "The answer is Rome.", item).correct
