"""Rows <-> API messages (tunewright.registry.v1 and the common types it embeds).

The only module that knows both shapes. Nested messages the registry stores as JSON use the
protobuf JSON mapping with proto field names, so ``to_json`` / ``from_json`` round-trip.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import InvalidArgument
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.registry import models
from tunewright.registry.v1 import registry_pb2
from tunewright.trainer.v1 import trainer_pb2

M = TypeVar("M", bound=Message)


class _EnumNames(dict[int, str]):
    """Enum number -> stored name. A number without a name (an enum is open: any int32
    arrives) is the request's fault, an InvalidArgument rather than a KeyError."""

    def __init__(self, enum: str, names: dict[int, str]) -> None:
        super().__init__(names)
        self.enum = enum

    def __missing__(self, number: int) -> str:
        raise InvalidArgument(
            f"unknown {self.enum} {number} (known: {', '.join(self.values())})",
            reason=f"UNKNOWN_{self.enum.upper()}",
        )


KIND_NAMES = _EnumNames(
    "dataset_kind",
    {
        common_pb2.DATASET_KIND_SFT: "sft",
        common_pb2.DATASET_KIND_PREFERENCE: "preference",
        common_pb2.DATASET_KIND_UNPAIRED: "unpaired",
        common_pb2.DATASET_KIND_EVAL: "eval",
        common_pb2.DATASET_KIND_PROMPT: "prompt",
    },
)
KINDS = {v: k for k, v in KIND_NAMES.items()}
SOURCE_NAMES = {
    registry_pb2.DATASET_SOURCE_UPLOAD: "upload",
    registry_pb2.DATASET_SOURCE_SYNTHETIC: "synthetic",
    registry_pb2.DATASET_SOURCE_FEEDBACK: "feedback",
    registry_pb2.DATASET_SOURCE_TRAFFIC: "traffic",
}
SOURCES = {v: k for k, v in SOURCE_NAMES.items()}
STATUS_NAMES = {
    value: name.removeprefix("JOB_STATUS_").lower()
    for name, value in common_pb2.JobStatus.items()
    if value != common_pb2.JOB_STATUS_UNSPECIFIED
}
STATUSES = {v: k for k, v in STATUS_NAMES.items()}


def to_json(message: Message) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (json_format.SerializeToJsonError, ValueError) as exc:  # bad Timestamp, NaN in a Struct
        raise InvalidArgument(
            f"{message.DESCRIPTOR.name} has a value that cannot be stored: {exc}",
            reason="UNSERIALIZABLE_VALUE",
        ) from None


def from_json(data: dict[str, Any] | None, message_type: type[M]) -> M:
    message = message_type()
    if data:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    return message


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def status_name(value: int) -> str:
    return STATUS_NAMES.get(value, "queued")


def status_value(name: str) -> int:
    return STATUSES.get(name, common_pb2.JOB_STATUS_UNSPECIFIED)


def dataset_version_pb(row: models.DatasetVersion) -> registry_pb2.DatasetVersion:
    return registry_pb2.DatasetVersion(
        id=row.id,
        workspace=row.workspace,
        dataset=row.dataset,
        version=row.version,
        content_hash=row.content_hash,
        kind=KINDS.get(row.kind, common_pb2.DATASET_KIND_UNSPECIFIED),
        splits={k: from_json(v, common_pb2.ArtifactRef) for k, v in row.splits.items()},
        counts=from_json(row.counts, registry_pb2.RowCounts),
        curation_report=from_json(row.curation_report, common_pb2.ArtifactRef),
        pii_audit=from_json(row.pii_audit, common_pb2.ArtifactRef),
        parent_version_ids=sorted(p.parent_id for p in row.parents),
        source=SOURCES.get(row.source, registry_pb2.DATASET_SOURCE_UNSPECIFIED),
        produced_by=row.produced_by,
        created_at=timestamp(row.created_at),
        labels=row.labels,
        canary_recall=row.canary_recall or {},
    )


def training_run_pb(row: models.TrainingRun) -> registry_pb2.TrainingRun:
    return registry_pb2.TrainingRun(
        id=row.id,
        workspace=row.workspace,
        job_id=row.job_id,
        spec=from_json(row.spec, trainer_pb2.TrainingJobSpec),
        status=status_value(row.status),
        history=[from_json(h, common_pb2.StatusTransition) for h in row.history],
        seed=row.seed,
        code_version=row.code_version,
        checkpoints=[from_json(c, trainer_pb2.Checkpoint) for c in row.checkpoints],
        metrics=row.metrics,
        metrics_log=from_json(row.metrics_log, common_pb2.ArtifactRef),
        created_at=timestamp(row.created_at),
        finished_at=timestamp(row.finished_at),
        environment=from_json(row.environment, trainer_pb2.RunEnvironment),
    )


def model_version_pb(row: models.ModelVersion, aliases: list[str]) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        id=row.id,
        workspace=row.workspace,
        model=row.model,
        version=row.version,
        base_model=row.base_model,
        weights=from_json(row.weights, common_pb2.ArtifactRef),
        method=row.method,
        parent_model_version_id=row.parent_model_version_id or "",
        dataset_version_ids=sorted(d.dataset_version_id for d in row.datasets),
        training_run_id=row.training_run_id or "",
        aliases=sorted(aliases),
        chat_template=row.chat_template,
        eos_token=row.eos_token,
        tokenizer=from_json(row.tokenizer, common_pb2.ArtifactRef),
        created_at=timestamp(row.created_at),
        labels=row.labels,
    )


def evaluation_pb(row: models.Evaluation) -> registry_pb2.Evaluation:
    return registry_pb2.Evaluation(
        id=row.id,
        workspace=row.workspace,
        candidate_model_version_id=row.candidate_model_version_id,
        baselines=row.baselines,
        run=from_json(row.run, evaluator_pb2.EvaluationRun),
        created_at=timestamp(row.created_at),
    )


def alias_pb(row: models.Alias | models.AliasAssignment) -> registry_pb2.AliasAssignment:
    return registry_pb2.AliasAssignment(
        workspace=row.workspace,
        model=row.model,
        alias=row.alias,
        model_version_id=row.model_version_id,
        assigned_at=timestamp(row.assigned_at),
        assigned_by=row.assigned_by,
    )


def audit_pb(row: models.AuditEvent) -> registry_pb2.AuditEvent:
    event = registry_pb2.AuditEvent(
        sequence=row.seq,
        at=timestamp(row.at),
        workspace=row.workspace,
        actor=row.actor,
        action=row.action,
        subject_kind=row.subject_kind,
        subject_id=row.subject_id,
        reason=row.reason,
    )
    event.details.update(row.details)
    return event


def stage_pb(row: models.PipelineStage) -> registry_pb2.StageState:
    return registry_pb2.StageState(
        name=row.name,
        kind=row.kind,
        status=status_value(row.status),
        job_id=row.job_id,
        started_at=timestamp(row.started_at),
        finished_at=timestamp(row.finished_at),
        outputs={k: str(v) for k, v in row.outputs.items()},
        error=from_json(row.error, common_pb2.ErrorDetail),
    )


def pipeline_run_pb(row: models.PipelineRun) -> registry_pb2.PipelineRun:
    return registry_pb2.PipelineRun(
        id=row.id,
        workspace=row.workspace,
        name=row.name,
        spec_yaml=row.spec_yaml,
        parameters=row.parameters,
        status=status_value(row.status),
        stages=[stage_pb(s) for s in row.stages],
        created_at=timestamp(row.created_at),
        finished_at=timestamp(row.finished_at),
        model_version_id=row.model_version_id,
        error=from_json(row.error, common_pb2.ErrorDetail),
        requested_by=row.requested_by,
        trigger_event_id=row.trigger_event_id,
    )
