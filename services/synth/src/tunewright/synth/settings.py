"""Settings of the synth service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``)."""

from __future__ import annotations

from pydantic import Field

from tunewright.core.settings import SettingsSection, TunewrightSettings


class SynthSection(SettingsSection):
    registry_address: str = Field(
        default="127.0.0.1:50055",
        description="RegistryService gRPC address: model versions and dataset versions.",
    )


class SynthSettings(TunewrightSettings):
    service_name: str = Field(default="synth", description="Name in logs, health and NATS.")
    synth: SynthSection = Field(default_factory=SynthSection, description="Synth.")
