"""Settings of the monitor service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``).

Windows, detectors, thresholds and the drift policy are all here, so one YAML file
(``services/monitor/monitor.example.yaml``) describes how a deployment is watched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tunewright.core.settings import SettingsSection, TunewrightSettings


class WindowSection(SettingsSection):
    size: int = Field(
        default=200,
        ge=2,
        le=2000,
        description="Interactions per window (per model version); a full window is scrubbed "
        "and analysed.",
    )
    max_wait_s: float = Field(
        default=900.0,
        gt=0,
        description="A window that is not full after this long is closed as it is.",
    )
    min_size: int = Field(
        default=30, ge=2, description="Windows smaller than this are stored, never tested."
    )
    attributes: list[str] = Field(
        default_factory=lambda: ["category", "product", "channel"],
        description="Interaction attributes kept with the scrubbed window (others are dropped: "
        "attributes are not PII-scrubbed, so only known label fields pass).",
    )


class DetectorSection(SettingsSection):
    name: str = Field(description="Drift detector plugin name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Detector parameters.")


def _default_detectors() -> list[DetectorSection]:
    return [DetectorSection(name=n) for n in ("input-embedding", "topic-mix", "output", "outcome")]


class PolicySection(SettingsSection):
    action: Literal["alert", "retrain"] = Field(
        default="alert",
        description="What a detection does: alert (the event only) or retrain (also request "
        "the retraining pipeline).",
    )
    min_detectors: int = Field(
        default=1, ge=1, description="Detectors that must flag a window for a detection."
    )
    cooldown_s: float = Field(
        default=86400.0,
        ge=0,
        description="At most one retraining pipeline per model version in this period.",
    )
    require_approval: bool = Field(
        default=True,
        description="Keep the pipeline's approve stage (a human gate) before promotion.",
    )
    feedback_backend: str = Field(
        default="argilla", description="Feedback backend the retraining pipeline's review uses."
    )
    pipeline_file: Path | None = Field(
        default=None,
        description="Retraining pipeline YAML (default: the one shipped with the monitor, "
        "tunewright/monitor/retrain.yaml); ${params.*} as documented there.",
    )
    negative_windows: int = Field(
        default=3, ge=1, description="Recent windows whose negative interactions are reviewed."
    )
    max_negatives: int = Field(default=500, ge=1, description="Cap on reviewed interactions.")
    min_negatives: int = Field(
        default=10,
        ge=1,
        description="Fewer negative interactions than this: alert only (the shipped pipeline's "
        "feedback stage waits for 10 ranked prompts).",
    )


class CanarySection(SettingsSection):
    enabled: bool = Field(default=False, description="Evaluate watched models on a schedule.")
    interval_s: float = Field(default=86400.0, gt=0, description="Time between canary runs.")
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="EvaluationSpec (JSON form) of the canary run; ${model} is replaced by the "
        "watched model version id. Its gate decides: a failed verdict is a detection.",
    )


class MonitorSection(SettingsSection):
    registry_address: str = Field(
        default="127.0.0.1:50055",
        description="RegistryService gRPC address: model versions and their training data.",
    )
    window: WindowSection = Field(default_factory=WindowSection, description="Windows.")
    detectors: list[DetectorSection] = Field(
        default_factory=_default_detectors, description="Drift detectors to run on each window."
    )
    family_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Chance of a false alarm per window when nothing drifted; split evenly "
        "over the detectors that run (Bonferroni).",
    )
    baseline_windows: int = Field(
        default=1,
        ge=1,
        description="A model's first windows: the reference of traffic-based detectors.",
    )
    max_reference_rows: int = Field(
        default=2000, ge=10, description="Training rows read as the reference (sampled)."
    )
    policy: PolicySection = Field(default_factory=PolicySection, description="Drift policy.")
    canary: CanarySection = Field(default_factory=CanarySection, description="Canary evaluation.")


class MonitorSettings(TunewrightSettings):
    service_name: str = Field(default="monitor", description="Name in logs, health and NATS.")
    monitor: MonitorSection = Field(default_factory=MonitorSection, description="Monitor.")
