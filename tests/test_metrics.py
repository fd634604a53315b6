"""Metrics: Wilson interval, perplexity and entropy, self-consistency, and the summary of records."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffmas.metrics import (
    accuracy,
    entropy_curve,
    entropy_from_logprobs,
    majority,
    mean_entropy,
    mean_perplexity,
    perplexity,
    self_consistency,
    summarize,
    wilson_interval,
)


def test_wilson_known_values():
    # textbook value: 8/10 -> (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(n=st.integers(1, 2000), data=st.data())
def test_wilson_contains_the_estimate(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_accuracy_dict():
    acc = accuracy([True, True, False, True])
    assert acc["accuracy"] == 0.75 and acc["n"] == 4 and acc["correct"] == 3
    assert acc["ci_low"] < 0.75 < acc["ci_high"]
    assert accuracy([])["accuracy"] == 0.0


def test_perplexity():
    assert perplexity([0.0, 0.0]) == 1.0
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert perplexity([math.log(0.5), math.log(0.25)]) == pytest.approx(math.exp(1.5 * math.log(2)))
    assert mean_perplexity([[0.0], [math.log(0.5)], []]) == pytest.approx(1.5)
    assert mean_perplexity([]) is None
    with pytest.raises(ValueError):
        perplexity([])


def test_entropy():
    assert entropy_from_logprobs([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(2))
    assert entropy_from_logprobs([0.0, -math.inf]) == 0.0
    assert mean_entropy([1.0, 3.0]) == 2.0
    assert entropy_curve([[1.0, 2.0, 3.0], [3.0]]) == [2.0, 2.0, 3.0]
    assert entropy_curve([[1.0, 2.0, 3.0]], max_len=2) == [1.0, 2.0]


def test_majority():
    assert majority(["a", "b", "a"]) == ("a", pytest.approx(2 / 3))
    assert majority(["b", "a"]) == ("b", 0.5)  # tie: first seen
    assert majority([None, None, "x"]) == ("x", pytest.approx(1 / 3))
    assert majority([None]) == (None, 0.0)


def test_self_consistency_with_grades_and_with_gold():
    samples = [["4", "4", "5"], ["7", "8", "8"], [None, None, None]]
    correct = [[True, True, False], [True, False, False], [False, False, False]]
    sc = self_consistency(samples, correct=correct)
    assert sc["majority_accuracy"] == pytest.approx(1 / 3)
    assert sc["mean_agreement"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert sc["n_items"] == 3 and sc["n_samples"] == 3
    sc2 = self_consistency(samples, gold=["4", "8", "1"])
    assert sc2["majority_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        self_consistency(samples)


def test_summarize_records_from_the_eval_runner():
    records = [
        {
            "correct": True,
            "logprobs": [0.0, 0.0],
            "entropies": [0.5, 0.5],
            "generated_tokens": 10,
            "trace_len": 100,
            "seconds": 1.0,
            "sample_answers": ["1", "1"],
            "sample_correct": [True, True],
        },
        {
            "correct": False,
            "reason": "failed: AssertionError",
            "logprobs": [math.log(0.5)],
            "entropies": [1.5],
            "generated_tokens": 30,
            "trace_len": 200,
            "seconds": 3.0,
            "sample_answers": ["2", "3"],
            "sample_correct": [False, False],
        },
    ]
    s = summarize(records)
    assert s["accuracy"] == 0.5 and s["n"] == 2
    assert s["mean_perplexity"] == pytest.approx(1.5)
    assert s["mean_token_entropy"] == pytest.approx(1.0)
    assert s["mean_generated_tokens"] == 20 and s["mean_trace_length"] == 150
    assert s["mean_seconds"] == 2.0 and s["total_seconds"] == 4.0
    assert s["self_consistency"]["majority_accuracy"] == 0.5
    assert s["self_consistency"]["mean_agreement"] == pytest.approx(0.75)
    assert s["failure_reasons"] == {"failed": 1}


def test_summarize_minimal_records():
    s = summarize([{"correct": True}, {"correct": False}])
    assert set(s) == {"accuracy", "ci_low", "ci_high", "n", "correct", "failure_reasons"}


@pytest.mark.parametrize(
    ("k", "n", "z", "expected"),
    [
        # computed by the hand-written Wilson formula this module had before it used scipy
        (1, 3, None, (0.06149194472039621, 0.7923403991979522)),
        (8, 10, None, (0.49016247153664183, 0.9433178485456247)),
        (0, 10, None, (0.0, 0.2775327998628892)),
        (10, 10, None, (0.7224672001371107, 1.0)),
        (37, 50, None, (0.6044684273515117, 0.8412847250644762)),
        (1, 1, None, (0.20654931437723745, 1.0)),
        (123, 1000, None, (0.10407414325107295, 0.1448112326470356)),
        (2, 7, None, (0.08221892400405678, 0.6410655481673808)),
        (3, 10, 1.0, (0.1788208207567646, 0.45754281560687166)),
    ],
)
def test_wilson_pinned(k, n, z, expected):
    got = wilson_interval(k, n) if z is None else wilson_interval(k, n, z=z)
    assert got == pytest.approx(expected, rel=1e-12, abs=0.0)
    if k == 0:
        assert got[0] == 0.0
    if k == n:
        assert got[1] == 1.0
