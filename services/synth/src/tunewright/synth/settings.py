"""Settings of the synth service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``)."""

from __future__ import annotations

from pydantic import Field

from tunewright.core.settings import TunewrightSettings


class SynthSettings(TunewrightSettings):
    service_name: str = Field(default="synth", description="Name in logs, health and NATS.")
