"""One grader for every method: `grade(task, output, item) -> Grade`.

The task's answer type picks the extractor and the comparison: `math` (boxed / "answer is" / last number,
compared with math-verify), `integer` (AIME-style), `mcq` (option letter or option text), `yesno`
(yes/no/true/false), `code` (run the item's tests in the sandbox), `gym` (reasoning-gym's own scorer) and
`text` (normalised exact match against the targets).

Grading reads a task only through `Gradable` (its answer type, and for gym its scorer when it has one) and an
`Item` from the leaf `diffmas.items`: it never imports `diffmas.tasks`, whose `Task.grade` calls down into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from diffmas.grading.choice import extract_choice, extract_yesno, yesno_value
from diffmas.grading.code import extract_code, run_item_tests
from diffmas.grading.gym import extract_gym_answer, gym_score
from diffmas.grading.math import extract_math_answer, integer_value, math_equal
from diffmas.items import Item


class Gradable(Protocol):
    """What grading reads of a task (`diffmas.tasks.base.Task` is one): the answer type that picks the grader."""

    @property
    def answer_type(self) -> str: ...


@dataclass(frozen=True)
class Grade:
    """The verdict on one output: the extracted answer, whether it is correct, and why not.

    `reason` is "" when correct; otherwise e.g. "no answer found", "wrong", or for code the sandbox
    outcome ("failed: AssertionError", "timeout: ...", "refused: os.fork"). `score` is the graded value in
    [0, 1] (partial credit only for gym scorers) and `info` holds extra detail (e.g. the sandbox result).
    """

    correct: bool
    extracted: str | None
    reason: str = ""
    score: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _verdict(ok: bool, extracted: str | None, **info: Any) -> Grade:
    if extracted is None:
        return Grade(False, None, "no answer found", 0.0, info)
    return Grade(ok, extracted, "" if ok else "wrong", 1.0 if ok else 0.0, info)


def grade_math(output: str, item: Item) -> Grade:
    gold = item.answer
    if yesno_value(gold) is not None and len(gold.split()) <= 2:  # e.g. CHAMP's "No"
        return grade_yesno(output, item)
    pred, how = extract_math_answer(output)
    return _verdict(pred is not None and math_equal(pred, gold), pred, method=how)


def grade_integer(output: str, item: Item) -> Grade:
    pred, how = extract_math_answer(output)
    gold = integer_value(item.answer)
    if gold is None:
        return grade_math(output, item)
    value = integer_value(pred)
    ok = value == gold if value is not None else pred is not None and math_equal(pred, item.answer)
    return _verdict(ok, pred, method=how)


def grade_mcq(output: str, item: Item) -> Grade:
    letter = extract_choice(output, item.choices)
    correct = set(item.meta.get("correct_letters") or []) | {item.answer.strip().upper()}
    return _verdict(letter is not None and letter in correct, letter)


def grade_yesno(output: str, item: Item) -> Grade:
    pred = extract_yesno(output)
    return _verdict(pred is not None and pred == yesno_value(item.answer), pred)


def _norm_text(s: str) -> str:
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s.lower())
    return " ".join(re.sub(r"[^\w\s]", " ", s).split())


def grade_text(output: str, item: Item) -> Grade:
    pred, how = extract_math_answer(output)
    if how == "number":  # no boxed/phrase: a free-text answer is more likely the last line
        lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
        pred = lines[-1] if lines else pred
    targets = [str(t) for t in item.meta.get("targets") or [item.answer]]
    ok = pred is not None and any(
        _norm_text(pred) == _norm_text(t) or (re.search(r"\d", t) and math_equal(pred, t)) for t in targets
    )
    return _verdict(ok, pred, method=how)


def grade_code(output: str, item: Item) -> Grade:
    code = extract_code(output)
    if code is None:
        return Grade(False, None, "no code found", 0.0)
    if not item.tests:
        return Grade(False, code, "item has no tests", 0.0)
    result = run_item_tests(code, item)
    reason = "" if result.passed else f"{result.reason}: {result.details}".rstrip(": ")
    return Grade(result.passed, code, reason, 1.0 if result.passed else 0.0, {"sandbox": result.to_dict()})


def grade_gym(task: Gradable, output: str, item: Item) -> Grade:
    pred = extract_gym_answer(output)
    try:
        score = gym_score(task, pred, item)
    except Exception as e:  # a scorer crashing on odd input counts as wrong, with the reason kept
        return Grade(False, pred, f"scorer error: {type(e).__name__}: {e}", 0.0)
    ok = score >= 1.0 - 1e-9
    if pred is None:
        return Grade(False, None, "no answer found", score)
    return Grade(ok, pred, "" if ok else "wrong", score)


def grade(task: Gradable, output: str, item: Item) -> Grade:
    """Grade `output` for `item` according to `task.answer_type`."""
    kind = task.answer_type
    if kind == "math":
        return grade_math(output, item)
    if kind == "integer":
        return grade_integer(output, item)
    if kind == "mcq":
        return grade_mcq(output, item)
    if kind == "yesno":
        return grade_yesno(output, item)
    if kind == "code":
        return grade_code(output, item)
    if kind == "gym":
        return grade_gym(task, output, item)
    if kind == "text":
        return grade_text(output, item)
    raise ValueError(f"no grader for answer type {kind!r}")


__all__ = [
    "Gradable",
    "Grade",
    "grade",
    "grade_code",
    "grade_gym",
    "grade_integer",
    "grade_math",
    "grade_mcq",
    "grade_text",
    "grade_yesno",
]
