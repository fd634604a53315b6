"""The trusted test process takes nothing from the solution but its entry point(s).

Each probe below is a *wrong* program that passed on the grader before this boundary was drawn
(every callable the solution offered was proxied into the test process, builtins included, and a
pass did not need a single call of the entry point). Each must now fail or error, while honest
answers that define helpers of any name keep their verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmas.grading import grade
from diffmas.grading.harness import run_tests, solution_names
from diffmas.grading.sandbox import SandboxConfig
from diffmas.tasks.base import Item
from diffmas.tasks.hub_code import humaneval_item

ASSETS = Path(__file__).parents[1] / "assets"
CFG = SandboxConfig(timeout=10.0)


class _CodeTask:
    answer_type = "code"


def _answer_rows() -> dict[str, dict]:
    rows = [json.loads(line) for line in (ASSETS / "code_answers.jsonl").open()]
    return {r["task_id"]: r for r in rows}


def _fixture(name: str):
    from diffmas.tasks import get_task

    task = get_task(name, path=ASSETS / "tasks" / f"{name.replace('-', '')}.jsonl")
    return task, task.load("test")


def _grade(item: Item, code: str):
    return grade(_CodeTask(), f"```python\n{code}```", item)


# --- probes that passed before -----------------------------------------------------------------------


def test_a_constant_stub_with_a_builtin_named_like_the_tests_helper_fails_on_humaneval():
    # HumanEval/2: `assert candidate(3.5) == 0.5` then `assert abs(candidate(1.33) - 0.33) < 1e-6`: the stub
    # answers 0.5 and its own `abs` says 0. The tests must use the real `abs`.
    item = humaneval_item(_answer_rows()["HumanEval/2"]["problem"])
    stub = "def abs(x):\n    return 0\n\ndef truncate_number(number):\n    return 0.5\n"
    g = _grade(item, stub)
    assert not g.correct and g.reason.startswith("failed"), g.reason


def test_shadowing_every_builtin_the_tests_use_changes_nothing():
    # add_two's loop `for a in range(20): assert candidate(a, a) == 2 * a` over the solution's `range`
    # (nothing) would skip the assertions this stub fails
    task, items = _fixture("humaneval-plus")
    item = next(it for it in items if it.meta["entry_point"] == "add_two")
    shadows = "".join(
        f"def {name}(*a, **k):\n    return {value}\n"
        for name, value in [("range", "[]"), ("all", "True"), ("len", "0"), ("isinstance", "True")]
    )
    g = _grade(item, shadows + "def add_two(a, b):\n    return a + b if a != b else 0\n")
    assert not g.correct and g.reason.startswith("failed"), g.reason


RECORDER = """
import builtins
_answers = {}
def zip(*its):
    pairs = list(builtins.zip(*its))
    if len(its) == 2:
        for inp, exp in pairs:
            _answers[repr(list(inp)) if isinstance(inp, (list, tuple)) else repr(inp)] = exp
    return pairs
def ENTRY(*args):
    return _answers.get(repr(list(args)))
"""


def test_an_evalplus_solution_cannot_record_the_expected_outputs():
    # the EvalPlus layout loops `for i, (inp, exp) in enumerate(zip(inputs, results))`: a solution `zip`
    # proxied into the test process saw every (inputs, expected) pair and answered from them
    task, items = _fixture("mbpp-plus")
    assert len(items) == 3
    for it in items:
        g = grade(task, "```python\n" + RECORDER.replace("ENTRY", it.meta["entry_point"]) + "```", it)
        assert not g.correct, (it.id, g.reason)


def test_a_pass_needs_a_completed_call_of_the_entry_point():
    # the solution's `zip` yields nothing: the EvalPlus loop (with the real zip) calls the entry point,
    # so here the tests themselves never call it; a verdict of passed needs one completed call
    never = Item(id="n", question="", answer="", tests="x = 1\n", meta={"entry_point": "f"})
    r = run_tests("def f():\n    return 1\n", never.tests or "", entry_points=("f",), config=CFG)
    assert not r.passed and r.reason == "error" and "never" in r.details, r
    task, items = _fixture("mbpp-plus")
    for it in items:
        code = f"def zip(*a):\n    return []\ndef {it.meta['entry_point']}(*a):\n    return None\n"
        g = grade(task, f"```python\n{code}```", it)
        assert not g.correct, (it.id, g.reason)


def test_a_stop_iteration_from_the_solution_cannot_end_the_tests_loop():
    # `all(map(...))` ends quietly when the mapped function raises StopIteration: from the solution it
    # must arrive as an error, not as the end of the iteration
    tests = "assert all(map(lambda x: f(x) == 2 * x, [1, 2, 3]))\n"
    r = run_tests("def f(x):\n    raise StopIteration\n", tests, entry_points=("f",), config=CFG)
    assert not r.passed and r.reason == "error" and "StopIteration" in r.details, r
    assert run_tests("def f(x):\n    return 2 * x\n", tests, entry_points=("f",), config=CFG).passed


# --- what honest answers keep ------------------------------------------------------------------------


def test_a_prompt_helper_redefined_by_the_solution_is_the_datasets_in_the_tests():
    # HumanEval/50: the tests call the prompt's encode_shift; a solution's own encode_shift (here the
    # identity, with an identity decode) never replaces it
    item = humaneval_item(_answer_rows()["HumanEval/50"]["problem"])
    g = _grade(item, "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n")
    assert not g.correct and g.reason.startswith("failed"), g.reason


@pytest.mark.parametrize(
    "solution",
    [
        "def helper(xs):\n    return sum(xs)\n\ndef total(xs):\n    return helper(xs)\n",
        "def sum(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n\ndef total(xs):\n    return sum(xs)\n",
        "def check(c):\n    raise AssertionError('not the tests check')\n\ndef total(xs):\n    return len(xs) and xs[0] + total(xs[1:])\n",
    ],
    ids=["own-helper", "own-sum-shadowing-the-builtin", "own-check"],
)
def test_honest_solutions_with_helpers_of_any_name_keep_passing(solution):
    tests = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n\ncheck(total)\n"
    r = run_tests(solution, tests, entry_points=("total",), config=CFG)
    assert r.passed, r


def test_a_jsonl_item_without_an_entry_point_proxies_the_names_its_tests_leave_unbound():
    assert solution_names("from math import sqrt\nassert f(2) == g(1) + sqrt(4)\n") == ("f", "g")
    assert solution_names(
        "def check(c):\n    assert c(1) == helper(1)\ncheck(solve)\n", "def helper(x):\n    return x\n"
    ) == ("solve",)
    assert solution_names("for i in range(3):\n    assert len(str(i)) == 1\n") == ()
    tests = "assert f() == 1\nassert len([f()]) == 1\n"
    assert run_tests("def len(x):\n    return 99\ndef f():\n    return 1\n", tests, config=CFG).passed
    assert not run_tests("def f():\n    return 2\n", tests, config=CFG).passed


SHADOWER = "".join(
    f"def {name}(*a, **k):\n    return {value}\n"
    for name, value in [
        ("abs", "0"), ("all", "True"), ("any", "True"), ("range", "[]"), ("zip", "[]"), ("enumerate", "[]"),
        ("len", "0"), ("isinstance", "True"), ("sorted", "[]"), ("sum", "0"), ("max", "0"), ("min", "0"),
        ("round", "0"), ("set", "set()"), ("list", "[]"), ("str", "''"), ("int", "0"), ("float", "0.0"),
        ("print", "None"), ("check", "None"), ("poly", "0"), ("encode_cyclic", "''"), ("encode_shift", "''"),
    ]
)  # fmt: skip


@pytest.mark.integration
def test_a_stub_shadowing_builtins_and_helpers_gets_nothing_on_humaneval():
    from concurrent.futures import ThreadPoolExecutor

    from diffmas.tasks import get_task

    task = get_task("humaneval")
    items = task.load("all")

    def shadowed(it: Item) -> bool:
        code = SHADOWER + f"def {it.meta['entry_point']}(*a, **k):\n    return None\n"
        return grade(task, f"```python\n{code}```", it).correct

    with ThreadPoolExecutor(2) as pool:
        passed = [it.id for it, ok in zip(items, pool.map(shadowed, items)) if ok]
    assert passed == []
