"""Running the drift detectors on a window and deciding whether it is a detection.

Detectors with ``baseline == "training"`` compare the window with the model's training rows;
those with ``baseline == "traffic"`` with the model's first (baseline) windows, and do not run
until there is one. The family-wise level ``family_alpha`` is split evenly over the detectors
that run (Bonferroni), so on traffic from the training distribution a window raises a false
alarm with probability at most ``family_alpha`` (bench/monitor measures it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True)
class NamedDetector:
    name: str
    detector: Any  # a drift detector plugin instance (see plugins/tunewright-drift)

    @property
    def baseline(self) -> str:
        return str(getattr(self.detector, "baseline", "training"))


def analyse(
    detectors: Sequence[NamedDetector],
    *,
    training: Sequence[Row],
    baseline: Sequence[Row] | None,
    current: Sequence[Row],
    family_alpha: float,
) -> list[dict[str, Any]]:
    """Results of every detector that can run, as JSON-safe dicts (``drifted`` included)."""
    runnable = [
        d
        for d in detectors
        if (d.baseline == "training" and training) or (d.baseline == "traffic" and baseline)
    ]
    if not runnable:
        return []
    alpha = family_alpha / len(runnable)
    results = []
    for named in runnable:
        reference = training if named.baseline == "training" else baseline
        assert reference is not None
        result = named.detector.detect(reference, current, alpha=alpha)
        p_value = float(result.p_value)
        results.append(
            {
                "detector": named.name,
                "baseline": named.baseline,
                "statistic": _number(result.statistic),
                "p_value": p_value,
                "alpha": alpha,
                "drifted": p_value < alpha,
                "summary": str(result.summary),
                "evidence": _json_safe(dict(result.evidence)),
            }
        )
    return results


def drifted(results: Sequence[Mapping[str, Any]], min_detectors: int) -> bool:
    return sum(1 for r in results if r["drifted"]) >= min_detectors


def _number(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _json_safe(value: Any) -> Any:
    """numpy scalars and tuples to plain JSON types (evidence travels in a Struct)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    try:
        return _number(value)
    except (TypeError, ValueError):
        return str(value)
