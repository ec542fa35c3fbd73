"""Training jobs as the trainer's domain sees them: plain dataclasses, no proto, no I/O.

:class:`JobSpec` is the validated, JSON-serialisable form of ``trainer.v1.TrainingJobSpec``
(``convert.py`` builds it); :class:`Job` is one job's persisted state (``store.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from tunewright.core.artifacts import ArtifactRef


class JobStatus(enum.StrEnum):
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class ControlAction(enum.StrEnum):
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a job asks for. Unset optional knobs are absent from the dicts (method default)."""

    workspace: str
    base_model: str
    method: str
    dataset_ids: tuple[str, ...]
    eval_dataset_id: str = ""
    parent_model_id: str = ""
    reward_model_id: str = ""
    #: type ("lora" | "none"), r, alpha, dropout, target_modules (only the set ones)
    peft: dict[str, Any] = field(default_factory=dict)
    #: bits (4 | 8), quant_type, double_quant, compute_dtype; empty = not quantized
    quantization: dict[str, Any] = field(default_factory=dict)
    #: the spec's hyperparameters that were set, by proto field name
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    method_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    trackers: tuple[tuple[str, dict[str, Any]], ...] = ()
    device: str = "auto"
    memory_limit_bytes: int = 0
    timeout_seconds: int = 0
    checkpoint_every_steps: int = 0
    output_model: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Checkpoint:
    step: int
    artifact: ArtifactRef
    created_at: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Transition:
    status: JobStatus
    at: float
    reason: str = ""


@dataclass(slots=True)
class Progress:
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float = 0.0
    learning_rate: float = 0.0
    tokens_per_second: float = 0.0
    eta_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    id: str
    spec: JobSpec
    #: the request exactly as received (serialized TrainingJobSpec), republished in facts
    spec_bytes: bytes
    status: JobStatus
    created_at: float
    history: list[Transition] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress = field(default_factory=Progress)
    latest_checkpoint: Checkpoint | None = None
    model_version_id: str = ""
    output: ArtifactRef | None = None
    tokenizer: ArtifactRef | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    error_reason: str = ""
    error_message: str = ""
    worker_id: str = ""
    attempt: int = 0
    heartbeat_at: float = 0.0
    #: queued control request not yet carried out (``pause`` while starting, ...)
    requested_control: str = ""


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str
    sequence: int
    created_at: float
    level: str  # info | warn | error
    kind: str  # message | metrics | status
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    status: JobStatus | None = None
