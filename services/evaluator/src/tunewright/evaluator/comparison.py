"""Metric values with bootstrap confidence intervals, and paired candidate-vs-baseline deltas.

All models are scored on the same samples, so deltas use a *paired* bootstrap: each resample
draws one set of sample indices and scores every model on it. Metrics that are a mean of
per-sample scores are resampled in one vectorised step; corpus metrics (BLEU, chrF, macro F1)
are recomputed on every resample. Intervals are percentile intervals (95% by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Texts = Sequence[str]


class Metric:
    """A metric as the evaluator uses it: a plugin's metric plus its direction."""

    def __init__(
        self, name: str, fn: Callable[[Texts, Texts], float], higher_is_better: bool
    ) -> None:
        self.name = name
        self.fn = fn
        self.higher_is_better = higher_is_better
        self.per_sample: Callable[[Texts, Texts], Sequence[float]] | None = getattr(
            fn, "per_sample", None
        )


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
