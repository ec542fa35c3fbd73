"""Settings of the trainer service (``TW_*`` env vars, YAML via ``--config`` or ``$TW_CONFIG``).

Trainer-only knobs live in the ``trainer`` section (``TW_TRAINER__CHECKPOINT_EVERY_STEPS=50``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from tunewright.core.settings import SettingsSection, TunewrightSettings


class LaunchSettings(SettingsSection):
    """How a job's child process starts: one process (default) or one per GPU on this host.

    ``TW_TRAINER__LAUNCH__LAUNCHER=accelerate TW_TRAINER__LAUNCH__NPROC_PER_NODE=4
    TW_TRAINER__LAUNCH__STRATEGY=fsdp``; see :mod:`tunewright.trainer.launch` for the command.
    """

    launcher: Literal["none", "accelerate", "torchrun"] = Field(
        default="none",
        description="'none': one child process (CPU or one GPU); 'accelerate' / 'torchrun': "
        "`nproc_per_node` processes, one per GPU, training one job together.",
    )
    nproc_per_node: int = Field(
        default=1, ge=1, le=64, description="Processes (GPUs) per job on this host."
    )
    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = Field(
        default="ddp",
        description="DDP replicates the model on every GPU; FSDP and DeepSpeed ZeRO-2/3 shard "
        "optimizer state (and with FSDP / ZeRO-3 the weights). FSDP and ZeRO need "
        "launcher 'accelerate'; ZeRO needs the deepspeed package.",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        default="bf16", description="accelerate's --mixed_precision."
    )
    offload: Literal["none", "cpu"] = Field(
        default="none",
        description="DeepSpeed: offload optimizer state (ZeRO-2/3) and parameters (ZeRO-3).",
    )
    accelerate_config_file: Path | None = Field(
        default=None,
        description="An `accelerate config` YAML passed as --config_file (flags still win).",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="More launcher flags, placed before the module."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.launcher == "none" and self.nproc_per_node != 1:
            raise ValueError(
                f"trainer.launch.nproc_per_node is {self.nproc_per_node} but "
                "trainer.launch.launcher is 'none' (one process): set launcher to "
                "'accelerate' or 'torchrun'"
            )
        if self.launcher != "accelerate" and self.strategy != "ddp":
            raise ValueError(
                f"trainer.launch.strategy {self.strategy!r} needs trainer.launch.launcher "
                f"'accelerate' (got {self.launcher!r}): torchrun and a single process run DDP only"
            )
        if self.launcher != "accelerate" and self.accelerate_config_file is not None:
            raise ValueError(
                "trainer.launch.accelerate_config_file is set but trainer.launch.launcher is "
                f"{self.launcher!r}"
            )
        return self


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
    launch: LaunchSettings = Field(
        default_factory=LaunchSettings,
        description="One process per job (default) or one job across this host's GPUs.",
    )


class TrainerSettings(TunewrightSettings):
    service_name: str = Field(default="trainer", description="Name in logs, health and NATS.")
    trainer: TrainerSection = Field(
        default_factory=TrainerSection, description="Trainer service knobs."
    )
