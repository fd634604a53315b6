"""Paired comparisons of two methods graded on the same test items.

Every rung of a ladder answers the same items, so the honest test of "A beats B" is paired: only the items where
the two disagree (the discordant pairs) carry information. Unpaired intervals on each accuracy overlap far more
than the paired difference warrants, and ignore that both methods find the same items easy or hard.

* `pair_by_id` aligns two runs' per-item correctness by item id (and refuses to guess when the item sets differ);
* `mcnemar_exact`: the exact McNemar test (a two-sided binomial test on the discordant pairs, `scipy.stats.binomtest`);
* `paired_bootstrap`: the accuracy difference with a 95% percentile interval (`scipy.stats.bootstrap`) and a
  bootstrap p-value;
* `majority_rate`: the accuracy of always answering the most common gold answer (the floor a method must beat).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as sps


class Paired(NamedTuple):
    """Per-item correctness of two runs, aligned: `a[i]` and `b[i]` are the grades of item `ids[i]`."""

    ids: list[str]
    a: list[bool]
    b: list[bool]


def preview_ids(ids: Iterable[Any], limit: int = 10) -> str:
    """The first `limit` ids (sorted) for an error message, and how many more there are."""
    ids = sorted(ids, key=str)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def _by_id(rows: Iterable[Mapping[str, Any]], side: str) -> dict[Any, bool]:
    out: dict[Any, bool] = {}
    dupes: set[Any] = set()
    for i, row in enumerate(rows):
        if "id" not in row:
            raise ValueError(f"{side}: row {i} has no 'id'")
        key = row["id"]
        if key in out:
            dupes.add(key)
        out[key] = bool(row.get("correct", False))
    if dupes:
        raise ValueError(f"{side}: duplicate item ids {preview_ids(dupes)}")
    return out


def pair_by_id(
    a_rows: Iterable[Mapping[str, Any]],
    b_rows: Iterable[Mapping[str, Any]],
    names: tuple[str, str] = ("a", "b"),
) -> Paired:
    """Align two lists of per-item rows (`id`, `correct`) by id, in the order of `a_rows`.

    A paired test is only valid on one item set, so differing sets and duplicate ids are errors (naming the ids),
    never silently intersected. `names` label the two sides in the messages.
    """
    a = _by_id(a_rows, names[0])
    b = _by_id(b_rows, names[1])
    only_a, only_b = a.keys() - b.keys(), b.keys() - a.keys()
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} only in {names[0]}: {preview_ids(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} only in {names[1]}: {preview_ids(only_b)}")
        raise ValueError("item sets differ; " + "; ".join(parts))
    ids = list(a)
    return Paired(ids, [a[i] for i in ids], [b[i] for i in ids])


@dataclass(frozen=True)
class McNemar:
    """Counts of a paired comparison and the exact two-sided McNemar p-value.

    `wins`: a right and b wrong; `losses`: a wrong and b right; ties are both right or both wrong.
    """

    wins: int
    losses: int
    ties_correct: int
    ties_wrong: int
    n: int
    p_value: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips: 2·P(X ≤ min(k, n−k)), capped at 1.

    `scipy.stats.binomtest` with p = 1/2; for a fair coin its two-sided rule (sum the outcomes no likelier than
    the one observed) is exactly the doubled smaller tail.
    """
    if n == 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got {k}/{n}")
    return float(sps.binomtest(k, n, 0.5).pvalue)


def _flags(x: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr.astype(bool)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """The exact McNemar test of two methods' per-item correctness (equal length, same item order).

    Under the null both methods are equally good, so each discordant item is a fair coin: the p-value is a
    two-sided binomial test of the wins among the wins + losses (1 when there are no discordant items).
    """
    fa, fb = _flags(a, "a"), _flags(b, "b")
    if len(fa) != len(fb):
        raise ValueError(f"a and b differ in length: {len(fa)} vs {len(fb)}")
    wins = int(np.sum(fa & ~fb))
    losses = int(np.sum(~fa & fb))
    both = int(np.sum(fa & fb))
    neither = int(np.sum(~fa & ~fb))
    return McNemar(wins, losses, both, neither, len(fa), binomial_two_sided(wins, wins + losses))


@dataclass(frozen=True)
class Bootstrap:
    """Accuracy difference a − b over the items, its 95% percentile interval and a two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_boot: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(
    a: Sequence[bool], b: Sequence[bool], n_boot: int = 10000, seed: int = 0, chunk: int = 1000
) -> Bootstrap:
    """Resample items (with replacement, the same items for both methods) to get the spread of acc(a) − acc(b).

    The p-value is 2·min(share of resampled differences ≤ 0, share ≥ 0), each share counted with the +1 of
    Davison & Hinkley so it is never 0 from a finite number of resamples; capped at 1. It agrees with the
    interval: p < 0.05 about when 0 lies outside it. The interval is `scipy.stats.bootstrap`'s percentile method
    (not its default BCa) and the p-value is read off its bootstrap distribution (scipy gives none). Deterministic
    for a given `seed` (and `chunk`, scipy's `batch`: the resamples drawn at a time, which only bounds memory).
    """
    fa, fb = _flags(a, "a"), _flags(b, "b")
    if len(fa) != len(fb):
        raise ValueError(f"a and b differ in length: {len(fa)} vs {len(fb)}")
    n = len(fa)
    if n == 0:
        raise ValueError("no items to compare")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    delta = fa.astype(np.int64) - fb.astype(np.int64)  # +1 win, -1 loss, 0 tie
    if n == 1:  # scipy needs two items; every resample of one item is that item
        diffs = np.full(n_boot, float(delta[0]))
        low = high = float(delta[0])
    else:
        # One sample of per-item differences is the paired bootstrap (the same items drawn for both methods).
        # scipy draws `rng.integers(0, n, (chunk, n))` per batch, the resamples this function drew by hand.
        res = sps.bootstrap(
            (delta,),
            _mean,
            n_resamples=n_boot,
            batch=chunk,
            vectorized=True,
            confidence_level=0.95,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        diffs = np.asarray(res.bootstrap_distribution)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    le = (int(np.sum(diffs <= 0)) + 1) / (n_boot + 1)
    ge = (int(np.sum(diffs >= 0)) + 1) / (n_boot + 1)
    return Bootstrap(
        diff=float(delta.sum() / n),
        ci_low=low,
        ci_high=high,
        p_value=min(1.0, 2 * min(le, ge)),
        n=n,
        n_boot=n_boot,
        seed=seed,
    )


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Integer sum over n: exact for the ±1/0 differences (no float accumulation), so ≤ 0 and ≥ 0 are exact."""
    return np.asarray(x.sum(axis=axis) / x.shape[axis])


def _hashable(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def majority_rate(golds: Iterable[Any]) -> float:
    """Share of the most common gold answer: the accuracy of a constant guess that knows the label prior.

    Unhashable golds (lists, dicts) are compared by their JSON form. Empty input is an error (no rate exists).
    """
    counts = Counter(_hashable(g) for g in golds)
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no gold answers")
    return max(counts.values()) / total


__all__ = [
    "Bootstrap",
    "McNemar",
    "Paired",
    "binomial_two_sided",
    "majority_rate",
    "mcnemar_exact",
    "pair_by_id",
    "paired_bootstrap",
    "preview_ids",
]
