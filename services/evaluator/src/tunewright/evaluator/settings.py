"""Settings of the evaluator service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``)."""

from __future__ import annotations

from pydantic import Field

from tunewright.core.settings import SettingsSection, TunewrightSettings


class EvaluatorSection(SettingsSection):
    registry_address: str = Field(
        default="127.0.0.1:50055",
        description="RegistryService gRPC address: model versions, dataset versions, runs.",
    )
    control_window_s: float = Field(
        default=86400.0,
        gt=0,
        description="How far back a starting evaluator reads control requests (cancels), so "
        "one published while it was down still stops its run; older ones are dropped.",
    )


class EvaluatorSettings(TunewrightSettings):
    service_name: str = Field(default="evaluator", description="Name in logs, health and NATS.")
    evaluator: EvaluatorSection = Field(default_factory=EvaluatorSection, description="Evaluator.")
