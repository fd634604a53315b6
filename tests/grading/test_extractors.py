"""Extractors: a table of tricky cases and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffmas.grading.choice import extract_choice, extract_yesno
from diffmas.grading.extract import (
    all_boxed,
    answer_phrase,
    last_boxed,
    last_number,
    last_python_block,
    numbers,
    strip_thinking,
)
from diffmas.grading.math import extract_math_answer, math_equal

BOXED = [
    ("\\boxed{42}", "42"),
    ("a \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{a}{\\sqrt{b^{2}}}} done", "\\frac{a}{\\sqrt{b^{2}}}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not end the box
    ("\\boxed {7}", "7"),
    ("\\boxed 7", "7"),
    ("\\fbox{3}", "3"),
    ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("truncated \\boxed{12", "12"),
    ("no box", None),
]


@pytest.mark.parametrize("text,expected", BOXED)
def test_last_boxed_table(text, expected):
    assert last_boxed(text) == expected


NUMBERS = [
    ("It costs 1,000 dollars", ["1000"]),
    ("1, 2 and 3", ["1", "2", "3"]),
    ("-3.5 and 4", ["-3.5", "4"]),
    ("half is 1/2", ["1/2"]),
    ("x2 and 5-3", ["5", "3"]),
    ("12,345,678.9", ["12345678.9"]),
    ("minus −7", ["-7"]),
    ("abc", []),
]


@pytest.mark.parametrize("text,expected", NUMBERS)
def test_numbers_table(text, expected):
    assert numbers(text) == expected


MATH_EXTRACT = [
    ("so the total is \\boxed{18}.", "18"),
    ("The answer is $1,000$.", "1,000"),
    ("**Final Answer:** 42", "42"),
    ("The answer is 42 apples because she ate them.", "42"),
    ("The answer is $\\frac{1}{2}$ of the cake", "\\frac{1}{2}"),
    ("we get 12 and then 1,000 apples", "1000"),
    ("<think>\\boxed{3}</think> The answer is 4", "4"),
    ("nothing here", None),
]


@pytest.mark.parametrize("text,expected", MATH_EXTRACT)
def test_math_extraction_table(text, expected):
    assert extract_math_answer(text)[0] == expected


EQUAL = [
    ("1,000", "1000", True),
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac12", True),
    ("\\dfrac{3}{4}", "3/4", True),
    ("\\$18", "18", True),
    ("18 dollars", "18", True),
    ("\\text{18 apples}", "18", True),
    ("10\\%", "10", True),
    ("50%", "0.5", True),
    ("x = 5", "5", True),
    ("72.0", "72", True),
    ("033", "33", True),
    ("−3", "-3", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
    ("x^2+1", "1+x^2", True),
    ("(3, -1)", "(3,-1)", True),
    ("\\{1,2\\}", "1,2", True),
    ("1,2", "12", False),
    ("5", "6", False),
    ("\\pi", "3.14159", False),
    ("1", "1000", False),
    ("", "1", False),
]


@pytest.mark.parametrize("pred,gold,expected", EQUAL)
def test_math_equal_table(pred, gold, expected):
    assert math_equal(pred, gold) is expected


CHOICES = ["Paris", "London", "Berlin", "Paris, Texas"]
CHOICE_CASES = [
    ("\\boxed{B}", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("B)", "B"),
    ("B: London", "B"),
    ("so the answer is C", "C"),
    ("The answer is (D).", "D"),
    ("Answer: A", "A"),
    ("**Answer:** **B**", "B"),
    ("\\boxed{\\text{B}}", "B"),
    ("\\boxed{Berlin}", "C"),
    ("I think it's London.", "B"),
    ("Paris, Texas", "D"),  # the longer option wins over the one it contains
    ("The answer is a tricky one. Final: (C)", "C"),
    ("The correct option is D because option A is wrong", "D"),
    ("A bird flies.", None),
    ("option A is wrong, option B too", None),
]


@pytest.mark.parametrize("text,expected", CHOICE_CASES)
def test_choice_table(text, expected):
    assert extract_choice(text, CHOICES) == expected


YESNO_CASES = [
    ("\\boxed{yes}", "yes"),
    ("\\boxed{\\text{No}}", "no"),
    ("The answer is No.", "no"),
    ("True", "yes"),
    ("so the statement is false", "no"),
    ("Yes, at first. But on reflection, no", "no"),
    ("maybe", None),
]


@pytest.mark.parametrize("text,expected", YESNO_CASES)
def test_yesno_table(text, expected):
    assert extract_yesno(text) == expected


def test_answer_phrase_and_thinking():
    assert answer_phrase("Thus the final answer is: 7.") == "7"
    assert answer_phrase("I answered it") is None
    assert strip_thinking("<think>a</think>b") == "b"
    assert strip_thinking("plain") == "plain"


def test_last_python_block():
    text = "```python\nx = 1\n```\nand\n```py\ny = 2\n```\n```\nplain\n```"
    assert last_python_block(text) == "y = 2\n"
    assert last_python_block("```\nonly = 1\n```") == "only = 1\n"
    assert last_python_block("```python\nunclosed = 1\n") == "unclosed = 1\n"
    assert last_python_block("no code") is None


# ---- properties ----------------------------------------------------------------------------------------

# LaTeX-ish content with balanced braces (escaped braces included)
_atoms = st.sampled_from(["1", "x", "\\frac", "+", " ", "^", "\\{", "\\}", "a", "\\sqrt", "2"])


@st.composite
def balanced(draw, depth=0):
    parts = draw(st.lists(_atoms, max_size=4))
    if depth < 3 and draw(st.booleans()):
        parts.append("{" + draw(balanced(depth + 1)) + "}")
        parts += draw(st.lists(_atoms, max_size=2))
    return "".join(parts)


@settings(max_examples=150, deadline=None)
@given(
    content=balanced(),
    prefix=st.text(alphabet="abc .,\n", max_size=20),
    suffix=st.text(alphabet="abc .", max_size=20),
)
def test_boxed_roundtrip_with_nested_braces(content, prefix, suffix):
    assert last_boxed(f"{prefix}\\boxed{{{content}}}{suffix}") == content.strip()


@settings(max_examples=100, deadline=None)
@given(first=balanced(), second=balanced())
def test_last_box_wins(first, second):
    text = f"\\boxed{{{first}}} then \\boxed{{{second}}}"
    assert last_boxed(text) == second.strip()
    assert all_boxed(text) == [first.strip(), second.strip()]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=-(10**12), max_value=10**12))
def test_thousands_separated_numbers_parse_whole(n):
    text = f"The total comes to {n:,} units."
    assert last_number(text) == str(n)
    assert math_equal(f"{n:,}", str(n))


@settings(max_examples=100, deadline=None)
@given(num=st.integers(-50, 50), den=st.integers(1, 40))
def test_latex_fraction_equals_decimal(num, den):
    from fractions import Fraction

    value = Fraction(num, den)
    assert math_equal(f"\\frac{{{num}}}{{{den}}}", f"{value.numerator}/{value.denominator}")
    if value.denominator in (1, 2, 4, 5, 8, 10, 20, 25, 40):  # finite decimals
        assert math_equal(f"\\frac{{{num}}}{{{den}}}", str(float(value)))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 8), data=st.data())
def test_choice_letter_forms(n, data):
    letters = "ABCDEFGH"[:n]
    letter = data.draw(st.sampled_from(letters))
    form = data.draw(
        st.sampled_from(["({})", "{}.", "{})", "\\boxed{{{}}}", "The answer is {}", "Answer: ({})"])
    )
    reasoning = data.draw(st.text(alphabet="abcdefgh xyz,.", max_size=40))
    choices = [f"option text {i}" for i in range(n)]
    assert extract_choice(f"{reasoning}\n{form.format(letter)}", choices) == letter


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 6), data=st.data())
def test_choice_by_exact_option_text(n, data):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    choices = [f"{w} {i}" for i, w in enumerate(words[:n])]
    i = data.draw(st.integers(0, n - 1))
    assert extract_choice(f"\\boxed{{{choices[i]}}}", choices) == "ABCDEF"[i]


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_extractors_never_raise(text):
    last_boxed(text)
    numbers(text)
    extract_math_answer(text)
    extract_choice(text, ["a", "b", "c"])
    extract_yesno(text)
    last_python_block(text)
