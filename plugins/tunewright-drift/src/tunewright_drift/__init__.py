"""tunewright's drift detectors, registered through ``tw_register_drift_detectors``.

``factory(**params)`` returns a detector with ``name``, ``baseline`` (``training`` or
``traffic``: what it compares the current window with) and
``detect(reference, current, *, alpha) -> DriftResult`` (``statistic``, ``p_value``,
``alpha``, ``drifted``, ``summary``, ``evidence``); see :mod:`tunewright_drift.detectors`.
numpy/scipy/scikit-learn load when a detector is built, the MiniLM model only when the
``minilm`` embedder is chosen.
"""

from __future__ import annotations

from typing import Any

from tunewright.core.plugins import DriftDetectorRegistry, hookimpl


def _input(**params: Any) -> Any:
    from tunewright_drift.detectors import InputDrift

    return InputDrift(**params)


def _topic(**params: Any) -> Any:
    from tunewright_drift.detectors import TopicMix

    return TopicMix(**params)


def _output(**params: Any) -> Any:
    from tunewright_drift.detectors import OutputDrift

    return OutputDrift(**params)


def _outcome(**params: Any) -> Any:
    from tunewright_drift.detectors import OutcomeDrift

    return OutcomeDrift(**params)


@hookimpl
def tw_register_drift_detectors(registry: DriftDetectorRegistry) -> None:
    registry.add(
        name="input-embedding",
        factory=_input,
        description="prompt embedding distribution vs training prompts (MMD permutation test)",
    )
    registry.add(
        name="topic-mix",
        factory=_topic,
        description="category mix vs training rows (chi-square homogeneity test)",
    )
    registry.add(
        name="output",
        factory=_output,
        description="answer length (KS) and refusal rate (Fisher) vs the first traffic windows",
    )
    registry.add(
        name="outcome",
        factory=_outcome,
        description="thumbs-down and escalation rates (Fisher) vs the first traffic windows",
    )
