"""Every hub benchmark loader on a small local fixture in the hub dataset's own schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmas.grading import grade
from diffmas.tasks import get_task
from diffmas.tasks.hub import DatasetUnavailable, read_rows

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tasks"


def load(name: str, fixture: str, **kw):
    task = get_task(name, path=ASSETS / fixture, **kw)
    return task, task.load("test")


def test_gsm8k_takes_the_number_after_hashes_without_commas():
    task, items = load("gsm8k", "gsm8k.jsonl")
    assert [it.answer for it in items] == ["31", "1000", "3"]
    assert items[0].question.startswith("Tom has 3 boxes")
    assert "####" in items[0].meta["solution"]
    assert task.answer_type == "math"
    assert grade(task, "He has \\boxed{31} pencils.", items[0]).correct
    assert grade(task, "So the shop sold 1,000 cups.", items[1]).correct


def test_math500_keeps_latex_answers_and_ids():
    task, items = load("math500", "math500.jsonl")
    assert items[0].id == "test/prealgebra/1.json"
    assert items[0].answer == "\\frac{5}{6}"
    assert items[0].meta["subject"] == "Prealgebra"
    assert grade(task, "The sum is $\\boxed{\\dfrac{5}{6}}$", items[0]).correct
    assert grade(task, "so \\boxed{5/6}", items[0]).correct
    assert not grade(task, "\\boxed{\\frac{6}{5}}", items[0]).correct
    assert grade(task, "\\boxed{\\{1, -1\\}}", items[2]).correct


@pytest.mark.parametrize("name,fixture", [("aime24", "aime24.jsonl"), ("aime25", "aime25.jsonl")])
def test_aime_answers_are_integers(name, fixture):
    task, items = load(name, fixture)
    assert task.answer_type == "integer"
    assert len(items) == 3
    assert all(str(int(it.answer)) == it.answer for it in items)
    assert grade(task, f"\\boxed{{{items[0].answer}}}", items[0]).correct


def test_aime_leading_zeros_are_dropped_and_graded_as_integers():
    task, items = load("aime24", "aime24.jsonl")
    assert items[2].answer == "33"
    assert grade(task, "\\boxed{033}", items[2]).correct
    assert grade(task, "\\boxed{33}", items[2]).correct
    assert not grade(task, "\\boxed{33.5}", items[2]).correct


def test_gpqa_shuffles_options_per_item_deterministically():
    task, items = load("gpqa-diamond", "gpqa_diamond.csv")
    assert len(items) == 4
    for it in items:
        assert it.choices is not None and len(it.choices) == 4
        assert it.answer in "ABCD"
    # the correct text sits at the answer letter
    assert items[0].choices["ABCD".index(items[0].answer)] == "Electron"
    assert items[3].choices["ABCD".index(items[3].answer)] == "46"
    # same order on a reload, and not always position A (the source lists the correct answer first)
    _, again = load("gpqa-diamond", "gpqa_diamond.csv")
    assert [it.choices for it in again] == [it.choices for it in items]
    letters = {it.answer for it in items}
    assert letters != {"A"}
    # a different seed reshuffles
    _, other = load("gpqa-diamond", "gpqa_diamond.csv", seed=1)
    assert [it.choices for it in other] != [it.choices for it in items]
    assert grade(task, f"The answer is ({items[1].answer}).", items[1]).correct
    assert grade(task, "\\boxed{Na}", items[1]).correct


def test_gpqa_reads_parquet_too(tmp_path):
    import pyarrow as pa  # a dependency of `datasets`, so always installed: a missing one must fail, not skip
    import pyarrow.parquet as pq

    rows = read_rows(ASSETS / "gpqa_diamond.csv")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "gpqa.parquet")
    _, from_csv = load("gpqa-diamond", "gpqa_diamond.csv")
    task = get_task("gpqa-diamond", path=tmp_path / "gpqa.parquet")
    assert task.load("test") == from_csv


def test_arc_maps_numeric_labels_to_letters():
    task, items = load("arc-challenge", "arc_challenge.jsonl")
    assert [it.answer for it in items] == ["B", "C", "A"]
    assert items[1].choices == ("ruler", "scale", "thermometer", "barometer")
    assert items[1].meta["labels"] == ["1", "2", "3", "4"]
    assert len(items[2].choices) == 3
    assert "(C) thermometer" in task.render_question(items[1])
    assert grade(task, "The answer is C.", items[1]).correct
    assert grade(task, "I pick the thermometer", items[1]).correct


def test_arc_easy_shares_the_schema():
    _, items = load("arc-easy", "arc_challenge.jsonl")
    assert items[0].answer == "B"


def test_openbookqa_reads_question_stem():
    task, items = load("openbookqa", "openbookqa.jsonl")
    assert items[0].question == "A magnet will stick to"
    assert [it.answer for it in items] == ["B", "B", "D"]
    assert grade(task, "\\boxed{D}", items[2]).correct


def test_commonsenseqa_has_five_options():
    task, items = load("commonsenseqa", "commonsenseqa.jsonl")
    assert all(len(it.choices) == 5 for it in items)
    assert items[0].answer == "B" and items[0].meta["concept"] == "milk"
    assert grade(task, "Answer: (B)", items[0]).correct
    assert not grade(task, "Answer: (A)", items[0]).correct


def test_commonsenseqa_unlabelled_split_is_an_error(tmp_path):
    row = json.loads((ASSETS / "commonsenseqa.jsonl").read_text().splitlines()[0])
    row["answerKey"] = ""
    (tmp_path / "t.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="no answer key"):
        get_task("commonsenseqa", path=tmp_path / "t.jsonl").load("test")


def test_medqa_options_dict_and_answer_text_fallback():
    task, items = load("medqa", "medqa.jsonl")
    assert items[0].choices == ("Insulin", "Glucagon", "Oxytocin", "Melatonin")
    assert [it.answer for it in items] == ["B", "C", "A"]  # the third row has no answer_idx
    assert grade(task, "The answer is B: Glucagon", items[0]).correct


def test_medqa_options_as_key_value_list(tmp_path):
    row = {
        "question": "q?",
        "options": [{"key": "A", "value": "x"}, {"key": "B", "value": "y"}],
        "answer_idx": "B",
        "answer": "y",
    }
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    (item,) = get_task("medqa", path=tmp_path / "m.jsonl").load("test")
    assert item.choices == ("x", "y") and item.answer == "B"


def test_humaneval_plus_canonical_passes_and_wrong_fails():
    task, items = load("humaneval-plus", "humanevalplus.jsonl")
    assert task.answer_type == "code"
    assert items[0].meta["entry_point"] == "add_two"
    assert items[0].tests.rstrip().endswith("check(add_two)")
    for it in items:
        body = it.answer[len(it.meta["prompt"]) :]
        assert grade(task, f"```python\n{it.answer}```", it).correct
        assert grade(task, f"```python\n{body}```", it).correct  # body-only continuation
    wrong = grade(task, "```python\ndef add_two(a, b):\n    return a - b\n```", items[0])
    assert not wrong.correct and wrong.reason.startswith("failed")
    # a full solution that relies on a helper defined in the prompt
    full = "```python\ndef reverse_words(s):\n    return ' '.join(_helper(s)[::-1])\n```"
    assert grade(task, full, items[2]).correct


def test_mbpp_plus_runs_the_full_script():
    task, items = load("mbpp-plus", "mbppplus.jsonl")
    assert [it.meta["entry_point"] for it in items] == ["similar_elements", "is_not_prime", "mean_of"]
    assert items[0].id == "Mbpp/2"
    assert "Your code should pass this test:" in items[0].question
    assert "import math" in items[1].tests
    for it in items:
        g = grade(task, f"Here you go:\n```python\n{it.answer}```", it)
        assert g.correct, g.reason
    bad = grade(task, "```python\ndef is_not_prime(n):\n    return n % 2 == 0\n```", items[1])
    assert not bad.correct


def test_paths_by_split_and_unknown_split(tmp_path):
    task = get_task("gsm8k", path={"train": ASSETS / "gsm8k.jsonl", "test": ASSETS / "gsm8k.jsonl"})
    assert task.splits() == ("train", "test")
    assert len(task.load("train")) == 3
    with pytest.raises(ValueError, match="no split 'validation'"):
        task.load("validation")
    single = get_task("gsm8k", path=ASSETS / "gsm8k.jsonl", limit=2)
    assert len(single.load("test")) == 2


def test_missing_field_names_the_row(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"gsm8k test row 0"):
        get_task("gsm8k", path=tmp_path / "bad.jsonl").load("test")


def test_hub_unreachable_says_how_to_use_a_local_file(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetUnavailable, match="path="):
        get_task("math500").load("test")


def test_read_rows_formats(tmp_path):
    rows = [{"question": "a", "answer": "1"}]
    (tmp_path / "a.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    assert read_rows(tmp_path / "a.json") == rows == read_rows(tmp_path / "b.json")
    with pytest.raises(ValueError, match="unsupported"):
        (tmp_path / "c.txt").write_text("x")
        read_rows(tmp_path / "c.txt")
