"""Metric values with bootstrap confidence intervals, and paired candidate-vs-baseline deltas.

All models are scored on the same samples, so deltas use a *paired* bootstrap: each resample
draws one set of sample indices and scores every model on it. Metrics that are a mean of
per-sample scores are resampled in one vectorised step; corpus metrics (BLEU, chrF, macro F1)
are recomputed on every resample. Intervals are percentile intervals (95% by default).

Metrics that score the model itself (``needs="model"``: perplexity, preference accuracy, the
generation smoke test) give one row of numbers per sample and an ``aggregate(rows)``; the
bootstrap resamples rows and re-aggregates (:func:`score_rows`, :func:`paired_delta_rows`).
Judge metrics compare two models per sample, so their rows already are the paired differences
(:func:`judged_delta`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Texts = Sequence[str]


Rows = Sequence[Sequence[float]]
Aggregate = Callable[[Rows], float]


class Metric:
    """A metric as the evaluator uses it: a plugin's metric, its direction and what it needs
    (``outputs``: ``fn(predictions, references)``; ``model``: ``fn.score_model(...)`` and
    ``fn.aggregate(rows)``; ``judge``: ``fn.judge(...)`` and ``fn.aggregate(rows)``)."""

    def __init__(self, name: str, fn: Any, higher_is_better: bool, needs: str = "outputs") -> None:
        self.name = name
        self.fn = fn
        self.higher_is_better = higher_is_better
        self.needs = needs
        self.per_sample: Callable[[Texts, Texts], Sequence[float]] | None = getattr(
            fn, "per_sample", None
        )
        # corpus metrics (BLEU, chrF): per-sample sufficient statistics whose sum gives the score
        self.sample_stats: Callable[[Texts, Texts], Sequence[Sequence[float]]] | None = getattr(
            fn, "sample_stats", None
        )
        self.from_stats: Callable[[Sequence[float]], float] | None = getattr(fn, "from_stats", None)


@dataclass(frozen=True)
class MetricValue:
    role: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class Delta:
    metric: str
    baseline: str
    candidate_value: float
    baseline_value: float
    delta: float  # candidate - baseline
    ci_low: float
    ci_high: float
    higher_is_better: bool

    @property
    def improvement(self) -> float:
        """The delta in the metric's better direction (> 0 is better)."""
        return self.delta if self.higher_is_better else -self.delta

    @property
    def improvement_ci(self) -> tuple[float, float]:
        if self.higher_is_better:
            return self.ci_low, self.ci_high
        return -self.ci_high, -self.ci_low


def _indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _resampled(
    metric: Metric, predictions: Texts, references: Texts, idx: np.ndarray
) -> np.ndarray:
    if metric.per_sample is not None:
        scores = np.asarray(metric.per_sample(predictions, references), dtype=float)
        return np.asarray(scores[idx].mean(axis=1))
    if metric.sample_stats is not None and metric.from_stats is not None:
        stats = np.asarray(metric.sample_stats(predictions, references), dtype=np.int64)
        from_stats = metric.from_stats
        return np.array([from_stats(stats[row].sum(axis=0).tolist()) for row in idx], dtype=float)
    preds, refs = list(predictions), list(references)
    return np.array(
        [metric.fn([preds[i] for i in row], [refs[i] for i in row]) for row in idx], dtype=float
    )


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def score(
    metric: Metric,
    role: str,
    predictions: Texts,
    references: Texts,
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricValue:
    value = float(metric.fn(predictions, references))
    n = len(references)
    if n == 0:
        return MetricValue(role, metric.name, value, value, value, 0)
    low, high = _interval(
        _resampled(metric, predictions, references, _indices(n, samples, seed)), confidence
    )
    return MetricValue(role, metric.name, value, low, high, n)


def paired_delta(
    metric: Metric,
    baseline: str,
    candidate_predictions: Texts,
    baseline_predictions: Texts,
    references: Texts,
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Delta:
    if not (len(candidate_predictions) == len(baseline_predictions) == len(references)):
        raise ValueError("candidate, baseline and references must have the same samples")
    cand = float(metric.fn(candidate_predictions, references))
    base = float(metric.fn(baseline_predictions, references))
    n = len(references)
    if n == 0:
        return Delta(
            metric.name, baseline, cand, base, cand - base, 0.0, 0.0, metric.higher_is_better
        )
    idx = _indices(n, samples, seed)  # the same draws for both: a paired bootstrap
    deltas = _resampled(metric, candidate_predictions, references, idx) - _resampled(
        metric, baseline_predictions, references, idx
    )
    low, high = _interval(deltas, confidence)
    return Delta(metric.name, baseline, cand, base, cand - base, low, high, metric.higher_is_better)


def _resampled_rows(aggregate: Aggregate, rows: Rows, idx: np.ndarray) -> np.ndarray:
    # plain lists: a plugin's aggregate is written for sequences of floats, not numpy arrays
    table = [list(map(float, r)) for r in rows]
    return np.array([aggregate([table[i] for i in row]) for row in idx.tolist()], dtype=float)


def score_rows(
    metric: Metric,
    role: str,
    rows: Rows,
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MetricValue:
    """A ``needs="model"`` metric's value for one model with its bootstrap CI."""
    aggregate: Aggregate = metric.fn.aggregate
    value = float(aggregate(rows))
    n = len(rows)
    if n == 0:
        return MetricValue(role, metric.name, value, value, value, 0)
    resampled = _resampled_rows(aggregate, rows, _indices(n, samples, seed))
    low, high = _interval(resampled, confidence)
    return MetricValue(role, metric.name, value, low, high, n)


def paired_delta_rows(
    metric: Metric,
    baseline: str,
    candidate_rows: Rows,
    baseline_rows: Rows,
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Delta:
    """Candidate - baseline for a ``needs="model"`` metric, paired bootstrap CI."""
    if len(candidate_rows) != len(baseline_rows):
        raise ValueError("candidate and baseline must be scored on the same samples")
    aggregate: Aggregate = metric.fn.aggregate
    cand, base = float(aggregate(candidate_rows)), float(aggregate(baseline_rows))
    n = len(candidate_rows)
    if n == 0:
        return Delta(
            metric.name, baseline, cand, base, cand - base, 0.0, 0.0, metric.higher_is_better
        )
    idx = _indices(n, samples, seed)
    deltas = _resampled_rows(aggregate, candidate_rows, idx) - _resampled_rows(
        aggregate, baseline_rows, idx
    )
    low, high = _interval(deltas, confidence)
    return Delta(metric.name, baseline, cand, base, cand - base, low, high, metric.higher_is_better)


def judged_delta(
    metric: Metric,
    baseline: str,
    rows: Rows,
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Delta:
    """A judge metric's rows are per-sample outcomes of candidate vs baseline: ``aggregate``
    is the net win rate d = (wins - losses) / judged (0 = parity), and the CI is the bootstrap
    interval of d. The values shown for the two models are their win rates with ties counted
    half: the candidate's (wins + ties / 2) / judged = (1 + d) / 2, the baseline's
    (losses + ties / 2) / judged = (1 - d) / 2 (not the share of samples won outright)."""
    aggregate: Aggregate = metric.fn.aggregate
    net = float(aggregate(rows))
    n = len(rows)
    low = high = net
    if n:
        low, high = _interval(
            _resampled_rows(aggregate, rows, _indices(n, samples, seed)), confidence
        )
    return Delta(
        metric.name, baseline, (1 + net) / 2, (1 - net) / 2, net, low, high, metric.higher_is_better
    )
