"""Settings of the registry service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from tunewright.core.settings import SettingsSection, TunewrightSettings


class RegistrySection(SettingsSection):
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://tw@db/tunewright; "
        "default: SQLite at <data_dir>/registry.db.",
    )
    outbox_poll_s: float = Field(
        default=0.5, gt=0, description="How often unpublished outbox events are looked for."
    )


class RegistrySettings(TunewrightSettings):
    service_name: str = Field(default="registry", description="Name in logs, health and NATS.")
    registry: RegistrySection = Field(default_factory=RegistrySection, description="Registry.")

    def database_url(self) -> str:
        if self.registry.database_url is not None:
            return self.registry.database_url.get_secret_value()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'registry.db'}"
