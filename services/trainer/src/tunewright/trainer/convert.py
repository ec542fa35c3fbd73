"""Proto <-> domain for the trainer, in one place (servicer, consumers and events use it)."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef
from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.params import struct_params
from tunewright.trainer.jobs import Checkpoint, Job, JobEvent, JobSpec, JobStatus, Progress
from tunewright.trainer.v1 import trainer_pb2

_STATUS_TO_PB = {
    JobStatus.VALIDATING: common_pb2.JOB_STATUS_VALIDATING,
    JobStatus.QUEUED: common_pb2.JOB_STATUS_QUEUED,
    JobStatus.RUNNING: common_pb2.JOB_STATUS_RUNNING,
    JobStatus.PAUSED: common_pb2.JOB_STATUS_PAUSED,
    JobStatus.SUCCEEDED: common_pb2.JOB_STATUS_SUCCEEDED,
    JobStatus.FAILED: common_pb2.JOB_STATUS_FAILED,
    JobStatus.CANCELLED: common_pb2.JOB_STATUS_CANCELLED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_LEVELS = {
    "info": common_pb2.EVENT_LEVEL_INFO,
    "warn": common_pb2.EVENT_LEVEL_WARN,
    "error": common_pb2.EVENT_LEVEL_ERROR,
}
_KINDS = {
    "message": common_pb2.EVENT_KIND_MESSAGE,
    "metrics": common_pb2.EVENT_KIND_METRICS,
    "status": common_pb2.EVENT_KIND_STATUS,
}
_DEVICES = ("", "auto", "cpu", "cuda")


def status_to_pb(status: JobStatus) -> int:
    return _STATUS_TO_PB[status]


def status_from_pb(value: int, field: str = "statuses") -> JobStatus:
    """The job status of ``value``; an unset or unknown number (enums are open: any int32
    arrives) is an InvalidArgument naming ``field``."""
    status = _STATUS_FROM_PB.get(value)
    if status is None:
        known = ", ".join(common_pb2.JobStatus.Name(v) for v in _STATUS_FROM_PB)
        raise InvalidArgument(
            f"{field}: {value} is not a job status (one of {known})",
            field_violations=[FieldViolation(field, f"one of {known}")],
        )
    return status


def spec_from_pb(pb: trainer_pb2.TrainingJobSpec) -> JobSpec:
    """The domain spec; only fields the request set (optional / non-zero) are carried."""
    peft: dict[str, Any] = {}
    if pb.HasField("peft"):
        if pb.peft.type == trainer_pb2.PEFT_TYPE_NONE:
            peft["type"] = "none"
        elif pb.peft.type == trainer_pb2.PEFT_TYPE_LORA:
            peft["type"] = "lora"
        if pb.peft.r:
            peft["r"] = pb.peft.r
        if pb.peft.HasField("alpha"):
            peft["alpha"] = pb.peft.alpha
        if pb.peft.HasField("dropout"):
            peft["dropout"] = pb.peft.dropout
        if pb.peft.target_modules:
            peft["target_modules"] = list(pb.peft.target_modules)
        if pb.peft.layers_to_transform:
            peft["layers_to_transform"] = [int(i) for i in pb.peft.layers_to_transform]
    quantization: dict[str, Any] = {}
    q = pb.quantization
    if q.bits in (trainer_pb2.QUANTIZATION_BITS_4, trainer_pb2.QUANTIZATION_BITS_8):
        quantization = {
            "bits": 4 if q.bits == trainer_pb2.QUANTIZATION_BITS_4 else 8,
            "quant_type": q.quant_type or "nf4",
            "double_quant": q.double_quant,
            "compute_dtype": q.compute_dtype or "auto",
        }
    hp: dict[str, Any] = {}
    h = pb.hyperparameters
    for name in (
        "epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "max_length",
        "max_eval_samples",
    ):  # fmt: skip
        if getattr(h, name):
            hp[name] = int(getattr(h, name))
    for name in ("lr_scheduler", "precision", "attn_implementation"):
        if getattr(h, name):
            hp[name] = getattr(h, name)
    for name in (
        "learning_rate", "warmup_ratio", "weight_decay", "packing", "assistant_only_loss",
        "gradient_checkpointing",
    ):  # fmt: skip
        if h.HasField(name):
            hp[name] = getattr(h, name)
    return JobSpec(
        workspace=pb.workspace,
        base_model=pb.base_model,
        method=pb.method,
        dataset_ids=tuple(d.id for d in pb.datasets),
        eval_dataset_id=pb.eval_dataset.id,
        parent_model_id=pb.parent_model.id,
        reward_model_id=pb.reward_model.id,
        peft=peft,
        quantization=quantization,
        hyperparameters=hp,
        method_config=struct_params(pb.method_config, "spec.method_config"),
        seed=pb.seed,
        trackers=tuple(
            (t.name, struct_params(t.params, f"spec.trackers[{i}].params"))
            for i, t in enumerate(pb.trackers)
        ),
        device=pb.resources.device or "auto",
        memory_limit_bytes=pb.resources.memory_limit_bytes,
        timeout_seconds=pb.resources.timeout_seconds,
        checkpoint_every_steps=pb.checkpoint_every_steps,
        output_model=pb.output_model,
        labels=dict(pb.labels),
    )


def with_parent_defaults(
    spec: trainer_pb2.TrainingJobSpec, parent: JobSpec | None
) -> trainer_pb2.TrainingJobSpec:
    """A job on a parent model that leaves ``base_model`` or ``seed`` unset takes the parent's
    (the parent's stored spec has them resolved already, so a chain resolves to its root).
    Done on the proto, so the stored spec, the facts and the registry's training run all carry
    the values the job really used. An unknown parent changes nothing (pre-flight names it)."""
    if parent is None or (spec.base_model and spec.HasField("seed")):
        return spec
    resolved = trainer_pb2.TrainingJobSpec()
    resolved.CopyFrom(spec)
    if not resolved.base_model:
        resolved.base_model = parent.base_model
    if not resolved.HasField("seed"):
        resolved.seed = parent.seed
    return resolved


def environment_to_pb(env: dict[str, Any]) -> trainer_pb2.RunEnvironment:
    return trainer_pb2.RunEnvironment(
        code_version=str(env.get("code_version", "")),
        git_commit=str(env.get("git_commit", "")),
        library_versions={str(k): str(v) for k, v in env.get("library_versions", {}).items()},
        python_version=str(env.get("python_version", "")),
        base_weights_sha256=str(env.get("base_weights_sha256", "")),
        device=str(env.get("device", "")),
        seed=int(env.get("seed") or 0),
        base_model=str(env.get("base_model", "")),
    )


def ref_to_pb(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


def ref_from_pb(pb: common_pb2.ArtifactRef) -> ArtifactRef:
    sha = pb.sha256 or ArtifactRef.from_uri(pb.uri).sha256
    return ArtifactRef(sha, pb.size_bytes or None, pb.media_type or "application/octet-stream")


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def checkpoint_to_pb(c: Checkpoint) -> trainer_pb2.Checkpoint:
    return trainer_pb2.Checkpoint(
        step=c.step,
        artifact=ref_to_pb(c.artifact),
        created_at=timestamp(c.created_at),
        metrics=c.metrics,
    )


def progress_to_pb(p: Progress) -> trainer_pb2.TrainingProgress:
    return trainer_pb2.TrainingProgress(
        step=p.step,
        total_steps=p.total_steps,
        epoch=p.epoch,
        loss=p.loss,
        learning_rate=p.learning_rate,
        tokens_per_second=p.tokens_per_second,
        eta_seconds=p.eta_seconds,
        metrics=p.metrics,
    )


def job_to_pb(job: Job) -> trainer_pb2.TrainingJob:
    spec = trainer_pb2.TrainingJobSpec()
    spec.ParseFromString(job.spec_bytes)
    pb = trainer_pb2.TrainingJob(
        id=job.id,
        workspace=job.spec.workspace,
        spec=spec,
        status=status_to_pb(job.status),
        created_at=timestamp(job.created_at),
        progress=progress_to_pb(job.progress),
        model_version_id=job.model_version_id,
        final_metrics=job.final_metrics,
        worker_id=job.worker_id,
        attempt=job.attempt,
    )
    for t in job.history:
        pb.history.add(status=status_to_pb(t.status), at=timestamp(t.at), reason=t.reason)
    if job.started_at is not None:
        pb.started_at.CopyFrom(timestamp(job.started_at))
    if job.finished_at is not None:
        pb.finished_at.CopyFrom(timestamp(job.finished_at))
    if job.latest_checkpoint is not None:
        pb.latest_checkpoint.CopyFrom(checkpoint_to_pb(job.latest_checkpoint))
    if job.output is not None:
        pb.output.CopyFrom(ref_to_pb(job.output))
    if job.error_reason:
        pb.error.CopyFrom(error_to_pb(job.error_reason, job.error_message))
    return pb


def error_to_pb(reason: str, message: str) -> common_pb2.ErrorDetail:
    return common_pb2.ErrorDetail(reason=reason, message=message)


def event_to_pb(e: JobEvent) -> common_pb2.JobEvent:
    pb = common_pb2.JobEvent(
        job_id=e.job_id,
        sequence=e.sequence,
        created_at=timestamp(e.created_at),
        level=_LEVELS.get(e.level, common_pb2.EVENT_LEVEL_INFO),
        kind=_KINDS.get(e.kind, common_pb2.EVENT_KIND_MESSAGE),
        message=e.message,
        metrics=e.metrics,
    )
    if e.status is not None:
        pb.status = status_to_pb(e.status)
    return pb


def violations_to_pb(
    violations: list[tuple[str, str]],
) -> list[common_pb2.FieldViolation]:
    return [common_pb2.FieldViolation(field=f, description=d) for f, d in violations]
