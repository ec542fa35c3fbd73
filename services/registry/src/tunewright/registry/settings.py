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
    db_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="PostgreSQL: give up connecting after this long (also bounds the wait for "
        "a pooled connection); the call fails as UNAVAILABLE and facts are retried.",
    )
    db_statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="PostgreSQL statement_timeout of every statement (migrations excepted); "
        "SQLite: how long a writer waits for another's lock.",
    )
    stage_deadline_s: float = Field(
        default=48 * 3600.0,
        ge=0,
        description="A pipeline stage still running this long after it started fails the run "
        "with STAGE_DEADLINE_EXCEEDED (a lost fact must not leave a run waiting forever); a "
        "stage's own `deadline_seconds` overrides it. 0: no default deadline. Approve stages "
        "(a person decides) have one only when their spec sets it.",
    )
    deadline_check_s: float = Field(
        default=30.0, gt=0, description="How often running stages are checked for deadlines."
    )


class RegistrySettings(TunewrightSettings):
    service_name: str = Field(default="registry", description="Name in logs, health and NATS.")
    registry: RegistrySection = Field(default_factory=RegistrySection, description="Registry.")

    def database_url(self) -> str:
        if self.registry.database_url is not None:
            return self.registry.database_url.get_secret_value()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'registry.db'}"
