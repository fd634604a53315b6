"""Metrics the paper reports, as pure functions over per-item records.

* accuracy with a 95% Wilson score interval (well-behaved at 0%, 100% and small n, unlike the normal
  approximation), from `scipy.stats.binomtest(...).proportion_ci(method="wilson")`;
* decoding stability: answer perplexity = exp(mean NLL of the generated tokens), mean token entropy, and
  self-consistency over n samples (share of items whose majority answer is correct; mean agreement of the
  samples with their majority);
* `summarize(records)` turns a list of per-item dicts into the summary dict written to `summary.json`.

Inputs are per-token log-probabilities (natural log) and entropies (nats) as the decoder records them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from statistics import fmean
from typing import Any

from scipy import stats as sps
from scipy.special import ndtr

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion; (0, 0) for n = 0 (scipy needs n ≥ 1).

    `z` is the normal quantile of the interval (1.96 for 95%), turned into scipy's two-sided confidence level.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 0.0
    level = float(2 * ndtr(z) - 1)
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy(correct: Iterable[bool]) -> dict[str, float | int]:
    """{"accuracy", "ci_low", "ci_high", "n", "correct"} with a 95% Wilson interval."""
    flags = [bool(c) for c in correct]
    n, k = len(flags), sum(flags)
    low, high = wilson_interval(k, n)
    return {"accuracy": k / n if n else 0.0, "ci_low": low, "ci_high": high, "n": n, "correct": k}


def mean_nll(logprobs: Sequence[float]) -> float:
    """Mean negative log-likelihood per generated token."""
    if len(logprobs) == 0:
        raise ValueError("no tokens")
    return -fmean(float(x) for x in logprobs)


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(mean NLL) of one generated answer: 1.0 means every token had probability 1."""
    return math.exp(mean_nll(logprobs))


def mean_perplexity(per_item_logprobs: Iterable[Sequence[float]]) -> float | None:
    """The paper's decoding-stability number: the mean over items of each answer's perplexity
    (items with no generated tokens are skipped); None when there is nothing to average."""
    values = [perplexity(lp) for lp in per_item_logprobs if len(lp) > 0]
    return fmean(values) if values else None


def mean_entropy(entropies: Sequence[float]) -> float:
    """Mean per-token entropy (nats) of one answer."""
    if len(entropies) == 0:
        raise ValueError("no tokens")
    return fmean(float(x) for x in entropies)


def entropy_from_logprobs(logprobs: Sequence[float]) -> float:
    """Entropy (nats) of one full next-token distribution given as log-probabilities."""
    return -sum(math.exp(lp) * lp for lp in logprobs if lp > -math.inf)


def entropy_curve(per_item_entropies: Iterable[Sequence[float]], max_len: int | None = None) -> list[float]:
    """Mean entropy at each answer position across items (position t averages the items that reach t)."""
    seqs = [list(e) for e in per_item_entropies]
    length = max((len(s) for s in seqs), default=0)
    if max_len is not None:
        length = min(length, max_len)
    curve = []
    for t in range(length):
        vals = [s[t] for s in seqs if len(s) > t]
        curve.append(fmean(vals))
    return curve


def majority(answers: Sequence[Hashable | None]) -> tuple[Hashable | None, float]:
    """(majority answer, agreement = its share of the samples). Unanswered samples (None) count against
    agreement but never win; ties go to the answer seen first."""
    if not answers:
        raise ValueError("no samples")
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    best = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == best)
    return winner, best / len(answers)


def self_consistency(
    samples: Sequence[Sequence[Hashable | None]],
    correct: Sequence[Sequence[bool]] | None = None,
    gold: Sequence[Hashable] | None = None,
) -> dict[str, float | int]:
    """Self-consistency over n samples per item.

    `samples[i]` are the extracted answers of item i. Majority correctness comes from `correct[i][j]`
    (the grade of sample j; the majority is correct if any sample with the majority answer was graded
    correct) or, failing that, from comparing the majority answer with `gold[i]`.
    Returns majority_accuracy, its Wilson interval, mean_agreement, and the counts.
    """
    if correct is None and gold is None:
        raise ValueError("give per-sample correctness or gold answers")
    maj_ok: list[bool] = []
    agreements: list[float] = []
    for i, answers in enumerate(samples):
        winner, agree = majority(answers)
        agreements.append(agree)
        if winner is None:
            maj_ok.append(False)
        elif correct is not None:
            maj_ok.append(any(c for a, c in zip(answers, correct[i]) if a == winner))
        else:
            assert gold is not None
            maj_ok.append(winner == gold[i])
    acc = accuracy(maj_ok)
    return {
        "majority_accuracy": acc["accuracy"],
        "majority_ci_low": acc["ci_low"],
        "majority_ci_high": acc["ci_high"],
        "mean_agreement": fmean(agreements) if agreements else 0.0,
        "n_items": len(samples),
        "n_samples": max((len(s) for s in samples), default=0),
    }


def _mean_of(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in records if r.get(key) is not None]
    return fmean(vals) if vals else None


def _first(record: Mapping[str, Any], *keys: str) -> Any:
    return next((record[k] for k in keys if record.get(k)), None)


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of per-item records (the rows of samples.jsonl).

    Recognised keys per record (all optional but `correct`): `correct` (bool), `logprobs` (list of
    per-token log-probs of the answer), `entropies` (per-token entropies), `samples` or `sample_answers`
    (extracted answers from repeated sampling) with `samples_correct` or `sample_correct` (their grades),
    `generated_tokens`, `trace_length` or `trace_len`, `seconds`, `reason`. Keys that no record has are left out of the summary.
    """
    out: dict[str, Any] = dict(accuracy(r.get("correct", False) for r in records))
    logprobs = [r["logprobs"] for r in records if r.get("logprobs")]
    if logprobs:
        out["mean_perplexity"] = mean_perplexity(logprobs)
        out["mean_nll"] = fmean(mean_nll(lp) for lp in logprobs)
    entropies = [r["entropies"] for r in records if r.get("entropies")]
    if entropies:
        out["mean_token_entropy"] = fmean(mean_entropy(e) for e in entropies)
    sampled = [(r, _first(r, "samples", "sample_answers")) for r in records]
    sampled = [(r, s) for r, s in sampled if s]
    if sampled:
        out["self_consistency"] = self_consistency(
            [s for _, s in sampled],
            correct=[_first(r, "samples_correct", "sample_correct") or [False] * len(s) for r, s in sampled],
        )
    for keys, name in (
        (("generated_tokens",), "mean_generated_tokens"),
        (("trace_length", "trace_len"), "mean_trace_length"),
        (("seconds",), "mean_seconds"),
    ):
        for key in keys:
            value = _mean_of(records, key)
            if value is not None:
                out[name] = value
                break
    seconds = [float(r["seconds"]) for r in records if r.get("seconds") is not None]
    if seconds:
        out["total_seconds"] = sum(seconds)
    reasons = Counter((r.get("reason") or "wrong").split(":")[0] for r in records if not r.get("correct"))
    if reasons:
        out["failure_reasons"] = dict(reasons.most_common())
    return out


__all__ = [
    "Z_95",
    "accuracy",
    "entropy_curve",
    "entropy_from_logprobs",
    "majority",
    "mean_entropy",
    "mean_nll",
    "mean_perplexity",
    "perplexity",
    "self_consistency",
    "summarize",
    "wilson_interval",
]
