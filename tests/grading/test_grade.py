"""`grade(task, output, item)` for every answer type, and code grading through the sandbox."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from diffmas.grading import Grade, grade
from diffmas.grading.code import build_solution, extract_code, strip_main_guard
from diffmas.tasks.base import Item, Task


class T(Task):
    def __init__(self, answer_type):
        self.answer_type = answer_type
        self.name = f"t-{answer_type}"

    def load(self, split="test"):
        return []


def item(answer, **kw):
    return Item(id="i", question="q", answer=answer, **kw)


def test_grade_keeps_its_contract():
    g = grade(T("math"), "\\boxed{72}", item("72"))
    assert isinstance(g, Grade)
    assert (g.correct, g.extracted, g.reason) == (True, "72", "")
    miss = grade(T("math"), "I don't know", item("72"))
    assert (miss.correct, miss.extracted, miss.reason) == (False, None, "no answer found")
    wrong = grade(T("math"), "\\boxed{71}", item("72"))
    assert (wrong.correct, wrong.reason) == (False, "wrong")


@pytest.mark.parametrize(
    "output,answer,ok",
    [
        ("So she has \\boxed{1,000} apples", "1000", True),
        ("The answer is $\\frac{1}{2}$.", "0.5", True),
        ("total: 18 dollars. The answer is \\$18.", "18", True),
        ("\\boxed{\\text{18 apples}}", "18", True),
        ("We get 3, then 4, so 5", "5", True),
        ("\\boxed{5}", "6", False),
    ],
)
def test_math(output, answer, ok):
    assert grade(T("math"), output, item(answer)).correct is ok


def test_math_with_a_yes_no_gold_uses_the_yes_no_grader():
    assert grade(T("math"), "Therefore the answer is no.", item("No")).correct
    assert not grade(T("math"), "\\boxed{yes}", item("No")).correct


@pytest.mark.parametrize(
    "output,ok",
    [
        ("\\boxed{33}", True),
        ("\\boxed{033}", True),
        ("\\boxed{\\frac{66}{2}}", True),
        ("\\boxed{33.5}", False),
    ],
)
def test_integer(output, ok):
    assert grade(T("integer"), output, item("33")).correct is ok


def test_mcq_letter_text_and_multiple_correct():
    it = item("B", choices=("cat", "dog", "eel"))
    assert grade(T("mcq"), "(B)", it).correct
    assert grade(T("mcq"), "It must be the dog.", it).correct
    assert not grade(T("mcq"), "\\boxed{A}", it).correct
    multi = item("A", choices=("x", "y", "z"), meta={"correct_letters": ["A", "C"]})
    assert grade(T("mcq"), "\\boxed{C}", multi).correct


def test_yesno_and_true_false():
    assert grade(T("yesno"), "\\boxed{yes}", item("yes")).correct
    assert grade(T("yesno"), "That is True.", item("yes")).correct
    assert grade(T("yesno"), "false", item("no")).correct
    assert grade(T("yesno"), "The answer is No", item("False")).correct
    assert not grade(T("yesno"), "\\boxed{no}", item("yes")).correct


def test_text_targets():
    it = item("Paris", meta={"targets": ["Paris", "City of Paris"]})
    assert grade(T("text"), "The answer is Paris.", it).correct
    assert grade(T("text"), "\\boxed{city of paris}", it).correct
    assert not grade(T("text"), "\\boxed{Rome}", it).correct


def test_unknown_answer_type():
    with pytest.raises(ValueError):
        grade(T("nonsense"), "x", item("1"))  # type: ignore[arg-type]


# ---- code -----------------------------------------------------------------------------------------------

PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'
TESTS = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n\ncheck(total)\n"
CODE_ITEM = Item(
    id="c",
    question=PROMPT,
    answer=PROMPT + "    return sum(xs)\n",
    tests=TESTS,
    meta={"entry_point": "total", "prompt": PROMPT, "timeout": 5.0},
)


@pytest.mark.parametrize(
    "output",
    [
        "```python\ndef total(xs):\n    return sum(xs)\n```",
        "Sure:\n```python\n    return sum(xs)\n```",  # body-only continuation
        "```python\nreturn sum(xs)\n```",  # body without indentation
        "```py\ndef total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n```",
        "```python\ndef total(xs):\n    return sum(xs)\n\nif __name__ == '__main__':\n    print(total([int(input())]))\n```",
        "def total(xs):\n    return sum(xs)\n",  # no fence at all
        "```python\nx = 1\n```\nfinal version:\n```python\ndef total(xs):\n    return sum(xs)\n```",
    ],
)
def test_code_solutions_pass(output):
    g = grade(T("code"), output, CODE_ITEM)
    assert g.correct, (g.reason, build_solution(extract_code(output), CODE_ITEM))


@pytest.mark.parametrize(
    "output,reason",
    [
        ("```python\ndef total(xs):\n    return 0\n```", "failed"),
        ("```python\ndef total(xs):\n    return undefined_name\n```", "error"),
        ("```python\ndef total(xs):\n    while True:\n        pass\n```", "timeout"),
        ("```python\nimport os\ndef total(xs):\n    os.system('true')\n```", "refused"),
        ("```python\nimport sys\nsys.exit(0)\n```", "error"),
        ("no code here", "no code found"),
    ],
)
def test_code_failures_are_reported(output, reason):
    it = Item(**{**CODE_ITEM.__dict__, "meta": {**CODE_ITEM.meta, "timeout": 1.5}})
    g = grade(T("code"), output, it)
    assert not g.correct
    assert g.reason.startswith(reason), g.reason


def test_main_guard_is_stripped():
    code = "def f():\n    return 1\n\nif __name__ == \"__main__\":\n    f()\n    input()\nprint('kept')\n"
    out = strip_main_guard(code)
    assert "input()" not in out and "print('kept')" in out and "def f" in out


def test_code_grading_is_thread_safe():
    outputs = [
        "```python\ndef total(xs):\n    return sum(xs)\n```",
        "```python\ndef total(xs):\n    return 1\n```",
    ] * 3
    with ThreadPoolExecutor(3) as pool:
        grades = list(pool.map(lambda o: grade(T("code"), o, CODE_ITEM), outputs))
    assert [g.correct for g in grades] == [True, False] * 3


def test_math_grading_works_off_the_main_thread():
    with ThreadPoolExecutor(2) as pool:
        grades = list(
            pool.map(lambda o: grade(T("math"), o, item("0.5")), ["\\boxed{\\frac{1}{2}}", "\\boxed{x^2}"])
        )
    assert [g.correct for g in grades] == [True, False]


@pytest.mark.integration
def test_humaneval_canonical_solutions_all_pass_and_wrong_ones_fail():
    from diffmas.tasks import get_task

    task = get_task("humaneval")
    items = task.load("all")
    assert len(items) == 164
    with ThreadPoolExecutor(2) as pool:
        full = list(pool.map(lambda it: grade(task, f"```python\n{it.answer}```", it), items))
        body = list(
            pool.map(
                lambda it: grade(task, f"```python\n{it.answer[len(it.meta['prompt']) :]}```", it), items
            )
        )
        wrong = list(
            pool.map(
                lambda it: grade(
                    task, f"```python\ndef {it.meta['entry_point']}(*args):\n    return None\n```", it
                ),
                items,
            )
        )
    failed = [(it.id, g.reason) for it, g in zip(items, full) if not g.correct]
    assert failed == []
    assert all(g.correct for g in body)
    assert not any(g.correct for g in wrong)
    assert {g.reason.split(":")[0] for g in wrong} <= {"failed", "error"}
