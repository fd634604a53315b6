"""GSM-Symbolic template generator on synthetic templates, and on the real package (integration)."""

from __future__ import annotations

import random

import pytest

from diffmas.tasks.gsm_symbolic import (
    GenerationError,
    Template,
    TemplateError,
    evaluate,
    final_answer,
    parse_expr,
)

REPL = {
    "names": ["Ann", "Bob", "Cy"],
    "fractions": ["1/2", "1/4"],
    "numbers": ["one", "two", "three", "four"],
}

TEMPLATE = {
    "question": "Ann has 4 apples and buys 6 more. How many apples does she have?",
    "answer": "4 + 6 = <<4+6=10>>10\n#### 10",
    "id_orig": 7,
    "question_annotated": """{name,Ann} has {a,4} apples and buys {b,6} more. She eats {f,1/2} of {k_txt,two} apples. \
How many apples does {name,Ann} have?

#init:
- name = sample(names)
- $a = range(2, 50)
- $b = range(2, 50)
- $f = sample(fractions)
- k_txt, k = range_str(2, 4, 1, numbers)
- total = a + b

#conditions:
- a + b > 20
- divides(a, 2)
- is_int(f * k)

#answer: a + b - f * k
""",
    "answer_annotated": "{a} + {b} = <<{a}+{b}={a+b}>>{a+b}\n#### {a + b - f * k}",
}


def test_samples_meet_conditions_and_are_deterministic():
    t = Template(TEMPLATE, REPL, "x")
    for k in range(20):
        v = t.sample(random.Random(k))
        assert v["a"] + v["b"] > 20 and v["a"] % 2 == 0
        assert v["total"] == v["a"] + v["b"]  # derived after sampling
        assert (v["f"] * v["k"]).denominator == 1
        assert v["name"] in REPL["names"]
        assert t.answer(v) == final_answer(t.render_solution(v))
        q = t.render_question(v)
        assert "{" not in q and str(v["a"]) in q and v["k_txt"] in q
    assert t.sample(random.Random(3)) == t.sample(random.Random(3))


def test_unsatisfiable_template_raises():
    bad = dict(
        TEMPLATE, question_annotated=TEMPLATE["question_annotated"].replace("a + b > 20", "a + b > 1000")
    )
    with pytest.raises(GenerationError):
        Template(bad, REPL, "bad").sample(random.Random(0), tries=200)


def test_evaluator_refuses_code():
    with pytest.raises(TemplateError):
        evaluate(parse_expr("__import__('os').system('true')"), {})
    with pytest.raises(TemplateError):
        evaluate(parse_expr("(1).__class__"), {})
    assert evaluate(parse_expr("a * 2 if a > 1 else 0"), {"a": 3}) == 6


def test_final_answer():
    assert final_answer("blah\n#### 1,000") == "1000"
    with pytest.raises(ValueError):
        final_answer("no marker")


@pytest.mark.integration
def test_real_templates_generate_all_100():
    from diffmas.tasks import get_task

    originals = get_task("gsm8k-100").load("test")
    assert len(originals) == 100
    assert all(it.answer.lstrip("-").replace(".", "").isdigit() for it in originals)
    task = get_task("gsm-symbolic", variants=2, seed=0)
    items = task.load("test")
    assert task.skipped == {}
    assert len(items) == 200 and len({it.id for it in items}) == 200
    assert all("{" not in it.question for it in items)
    assert [it.question for it in get_task("gsm-symbolic", variants=2, seed=0).load("test")] == [
        it.question for it in items
    ]
    assert [it.question for it in get_task("gsm-symbolic", variants=2, seed=1).load("test")] != [
        it.question for it in items
    ]
