"""Settings of the trainer service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``).

Trainer-only knobs live in the ``trainer`` section (``TW_TRAINER__CHECKPOINT_EVERY_STEPS=50``).
"""

from __future__ import annotations

from pydantic import Field

from tunewright.core.settings import SettingsSection, TunewrightSettings


class TrainerSection(SettingsSection):
    checkpoint_every_steps: int = Field(
        default=50, ge=1, description="Checkpoint interval when a job does not set one."
    )
    progress_interval_s: float = Field(
        default=2.0, gt=0, description="At most one progress event per job this often."
    )
    heartbeat_s: float = Field(
        default=2.0, gt=0, description="How often a running job's worker marks it alive."
    )
    orphan_after_s: float = Field(
        default=30.0,
        gt=0,
        description="A running job whose worker has not marked it for this long is resumed "
        "elsewhere (a dead worker on this host is noticed at once).",
    )
    recovery_interval_s: float = Field(
        default=5.0, gt=0, description="How often a worker looks for orphaned jobs."
    )
    python: str = Field(
        default="", description="Interpreter for job child processes (default: this one)."
    )


class TrainerSettings(TunewrightSettings):
    service_name: str = Field(default="trainer", description="Name in logs, health and NATS.")
    trainer: TrainerSection = Field(
        default_factory=TrainerSection, description="Trainer service knobs."
    )
