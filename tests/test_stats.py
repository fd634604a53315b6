"""Paired statistics: exact McNemar against hand-computed binomial tails, the bootstrap, pairing by id."""

from __future__ import annotations

import math

import pytest

from diffmas.stats import (
    binomial_two_sided,
    majority_rate,
    mcnemar_exact,
    pair_by_id,
    paired_bootstrap,
)


def _pairs(wins: int, losses: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * wins + [False] * losses + [True] * both + [False] * neither
    b = [False] * wins + [True] * losses + [True] * both + [False] * neither
    return a, b


def test_no_discordant_pairs_give_p_one():
    m = mcnemar_exact(*_pairs(0, 0, both=5, neither=3))
    assert (m.wins, m.losses, m.ties_correct, m.ties_wrong, m.n) == (0, 0, 5, 3, 8)
    assert m.p_value == 1.0
    assert mcnemar_exact([], []).p_value == 1.0


def test_all_wins_is_twice_the_one_sided_tail():
    m = mcnemar_exact(*_pairs(10, 0))
    assert (m.wins, m.losses, m.n) == (10, 0, 10)
    assert m.p_value == pytest.approx(2 * 0.5**10)


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [
        (3, 1, 2 * (1 + 4) / 16),  # 0.625
        (8, 2, 2 * (1 + 10 + 45) / 1024),  # 0.109375, the textbook 8-vs-2 exact McNemar
        (9, 1, 2 * (1 + 10) / 1024),
        (5, 5, 1.0),  # symmetric: the two-sided tail exceeds 1 and is capped
        (1, 0, 1.0),
        (6, 0, 2 / 64),
    ],
)
def test_exact_p_values_by_hand(wins, losses, p):
    m = mcnemar_exact(*_pairs(wins, losses, both=4, neither=2))
    assert m.p_value == pytest.approx(p)
    assert m.ties_correct == 4 and m.ties_wrong == 2


def test_swapping_the_methods_swaps_wins_and_losses_not_p():
    a, b = _pairs(7, 2, both=3)
    ab, ba = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert (ab.wins, ab.losses) == (ba.losses, ba.wins)
    assert ab.p_value == ba.p_value
    assert ab.as_dict()["p_value"] == ab.p_value


def test_binomial_tail_is_exact_for_large_n():
    n = 2000  # far beyond float range for 2**n: exact integers then one correctly rounded division
    assert binomial_two_sided(n // 2, n) == 1.0
    assert 0.0 <= binomial_two_sided(900, n) < 1e-5
    assert binomial_two_sided(0, 0) == 1.0
    with pytest.raises(ValueError):
        binomial_two_sided(3, 2)


def test_mcnemar_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([True, False], [True])


def test_bootstrap_of_identical_methods_is_zero_with_p_one():
    a = [True, False, True, True, False] * 4
    r = paired_bootstrap(a, a, n_boot=500)
    assert (r.diff, r.ci_low, r.ci_high, r.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_all_wins_has_the_smallest_p_the_resamples_allow():
    a, b = _pairs(10, 0)
    r = paired_bootstrap(a, b, n_boot=999)
    assert (r.diff, r.ci_low, r.ci_high) == (1.0, 1.0, 1.0)
    assert r.p_value == pytest.approx(2 / 1000)


def test_bootstrap_interval_matches_the_normal_approximation_and_is_deterministic():
    a, b = _pairs(30, 10, both=100, neither=60)  # n=200, diff = 0.1
    r = paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert r.diff == pytest.approx(0.1)
    half = 1.96 * math.sqrt((40 / 200 - 0.1**2) / 200)  # sd of the mean of the +1/0/-1 item differences
    assert r.ci_low == pytest.approx(0.1 - half, abs=0.01)
    assert r.ci_high == pytest.approx(0.1 + half, abs=0.01)
    assert r.p_value < 0.01  # McNemar exact p is 0.0022
    assert paired_bootstrap(a, b, n_boot=4000, seed=1) == r
    assert paired_bootstrap(a, b, n_boot=4000, seed=2) != r
    flipped = paired_bootstrap(b, a, n_boot=4000, seed=1)
    assert flipped.diff == pytest.approx(-0.1)
    assert flipped.ci_low == pytest.approx(-r.ci_high) and flipped.ci_high == pytest.approx(-r.ci_low)


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap([True], [True, False])
    with pytest.raises(ValueError, match="no items"):
        paired_bootstrap([], [])


def _rows(pairs):
    return [{"id": i, "correct": c} for i, c in pairs]


def test_pair_by_id_aligns_in_the_order_of_a():
    a = _rows([("q1", True), ("q2", False), ("q3", True)])
    b = _rows([("q3", False), ("q1", True), ("q2", True)])
    p = pair_by_id(a, b)
    assert p.ids == ["q1", "q2", "q3"]
    assert p.a == [True, False, True] and p.b == [True, True, False]
    m = mcnemar_exact(p.a, p.b)
    assert (m.wins, m.losses, m.ties_correct) == (1, 1, 1)


def test_pair_by_id_names_the_missing_ids():
    a = _rows([("q1", True), ("q2", False), ("q4", True)])
    b = _rows([("q1", True), ("q3", True)])
    with pytest.raises(ValueError, match="only in diffmas: 'q2', 'q4'") as e:
        pair_by_id(a, b, names=("diffmas", "single"))
    assert "1 only in single: 'q3'" in str(e.value)


def test_pair_by_id_refuses_duplicates_and_rows_without_id():
    with pytest.raises(ValueError, match="duplicate item ids 'q1'"):
        pair_by_id(_rows([("q1", True), ("q1", False)]), _rows([("q1", True)]))
    with pytest.raises(ValueError, match="b: duplicate"):
        pair_by_id(_rows([("q1", True)]), _rows([("q1", True), ("q1", True)]))
    with pytest.raises(ValueError, match="no 'id'"):
        pair_by_id([{"correct": True}], _rows([("q1", True)]))


def test_majority_rate():
    assert majority_rate(["A", "A", "B", "C"]) == 0.5
    assert majority_rate(["yes"] * 7 + ["no"] * 3) == 0.7
    assert majority_rate([[1, 2], [1, 2], [3]]) == pytest.approx(2 / 3)  # unhashable golds by value
    with pytest.raises(ValueError):
        majority_rate([])


# Numbers computed by the hand-written implementation this module had before it used scipy; a library swap must
# keep them (the bootstrap draws the same resamples from the same seed, so its numbers are pinned exactly).
_A57 = "111001101101010100100101110100001010011101011111100000010"
_B57 = "000010011001011100101010000110111011010010000000010110001"


def _bits(s: str) -> list[bool]:
    return [c == "1" for c in s]


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (3, 4, 0.625),
        (8, 10, 0.109375),
        (40, 100, 0.05688793364098079),
        (900, 2000, 8.457089535503927e-06),
        (0, 1, 1.0),
        (17, 31, 0.720100131817162),
    ],
)
def test_binomial_two_sided_pinned(k, n, p):
    assert binomial_two_sided(k, n) == pytest.approx(p, rel=1e-12)
    assert mcnemar_exact(
        [True] * k + [False] * (n - k), [False] * k + [True] * (n - k)
    ).p_value == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "n_boot", "seed", "chunk", "expected"),
    [
        (
            _A57,
            _B57,
            2000,
            7,
            1000,
            (0.10526315789473684, -0.08771929824561403, 0.2982456140350877, 0.3638180909545227),
        ),
        (
            _A57,
            _B57,
            2500,
            7,
            300,
            (0.10526315789473684, -0.08771929824561403, 0.30745614035087876, 0.3598560575769692),
        ),
        (
            "1" * 30 + "0" * 10 + "1" * 100 + "0" * 60,
            "0" * 30 + "1" * 110 + "0" * 60,
            4000,
            1,
            1000,
            (0.1, 0.04, 0.16, 0.0014996250937265683),
        ),
        (
            "1110010",
            "0001110",
            101,
            0,
            1000,
            (0.14285714285714285, -0.42857142857142855, 0.5714285714285714, 0.8431372549019608),
        ),
    ],
)
def test_paired_bootstrap_pinned(a, b, n_boot, seed, chunk, expected):
    r = paired_bootstrap(_bits(a), _bits(b), n_boot=n_boot, seed=seed, chunk=chunk)
    assert (r.diff, r.ci_low, r.ci_high, r.p_value) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert (r.n, r.n_boot, r.seed) == (len(a), n_boot, seed)


def test_paired_bootstrap_of_one_item_is_that_item():
    # scipy's bootstrap needs two observations; one item keeps the old answer: every resample is that item
    r = paired_bootstrap([True], [False], n_boot=10)
    assert (r.diff, r.ci_low, r.ci_high) == (1.0, 1.0, 1.0)
    assert r.p_value == pytest.approx(2 / 11)
