"""Applying facts from NATS: record them, then advance the pipelines they concern.

:func:`apply_fact` runs in one database transaction together with the row that marks the
message processed, so a redelivered or duplicated fact (same ``Nats-Msg-Id``) changes nothing,
and a registry killed between commit and ack simply acks the redelivery. Facts that carry
the same entity under another message id (a producer that re-published with a new key) are
absorbed by the registration functions, which are idempotent on the entity's own id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.events.v1 import events_pb2
from tunewright.registry import convert, models, pipelines, records
from tunewright.registry.v1 import registry_pb2

log = logging.getLogger(__name__)

Handler = Callable[[Session, Any], None]


def already_processed(session: Session, durable: str, msg_id: str) -> bool:
    return session.get(models.ProcessedMessage, (durable, msg_id)) is not None


def mark_processed(session: Session, durable: str, msg_id: str) -> None:
    session.add(models.ProcessedMessage(durable=durable, msg_id=msg_id))


def apply_fact(session: Session, message: Message, *, durable: str, msg_id: str) -> bool:
    """Apply one fact once. Returns False when the message had been applied before."""
    if already_processed(session, durable, msg_id):
        return False
    handler = HANDLERS.get(message.DESCRIPTOR.full_name)
    if handler is not None:
        handler(session, message)
    mark_processed(session, durable, msg_id)
    return True


def apply_dead_letter(
    session: Session, request: Message, *, reason: str, durable: str, msg_id: str
) -> bool:
    """A service gave up on a request (dead-lettered it): fail the stage that asked for it."""
    if already_processed(session, durable, msg_id):
        return False
    job_id = getattr(request, "job_id", "") or getattr(request, "run_id", "")
    if job_id:
        error = {"reason": "DEAD_LETTERED", "message": reason or "the service gave up"}
        pipelines.on_job_outcome(session, job_id, "failed", error=error)
    mark_processed(session, durable, msg_id)
    return True


def _dataset_fact(
    source: int,
) -> Handler:
    def handle(session: Session, fact: Any) -> None:
        dv = registry_pb2.DatasetVersion()
        dv.CopyFrom(fact.dataset_version)
        if not dv.workspace:
            dv.workspace = fact.meta.workspace
        if not dv.source:
            dv.source = source
        if not dv.produced_by:
            dv.produced_by = fact.job_id
        row, _ = records.register_dataset_version(session, dv)
        pipelines.on_job_outcome(session, fact.job_id, "succeeded", {"dataset_version_id": row.id})

    return handle


def _failed(kind: str, id_field: str = "job_id") -> Handler:
    def handle(session: Session, fact: Any) -> None:
        error = (
            convert.to_json(fact.error) if fact.HasField("error") else {"message": f"{kind} failed"}
        )
        pipelines.on_job_outcome(session, getattr(fact, id_field), "failed", error=error)

    return handle


def _workspace(fact: Any) -> str:
    spec_ws = fact.spec.workspace if fact.HasField("spec") else ""
    return spec_ws or fact.meta.workspace or "default"


def _trainer_started(session: Session, fact: events_pb2.TrainerJobStarted) -> None:
    run = records.training_run_for_job(
        session, job_id=fact.job_id, workspace=_workspace(fact), spec=fact.spec
    )
    records.set_run_status(run, "running", f"attempt {fact.attempt} on {fact.worker_id}")
    pipelines.on_job_message(
        session, fact.job_id, f"training started on {fact.worker_id or 'a worker'}"
    )


def _trainer_checkpointed(session: Session, fact: events_pb2.TrainerJobCheckpointed) -> None:
    run = records.training_run_for_job(
        session, job_id=fact.job_id, workspace=fact.meta.workspace, spec=None
    )
    records.add_checkpoint(run, fact.checkpoint)


def _trainer_paused(session: Session, fact: events_pb2.TrainerJobPaused) -> None:
    run = records.training_run_for_job(
        session, job_id=fact.job_id, workspace=fact.meta.workspace, spec=None
    )
    if fact.HasField("checkpoint"):
        records.add_checkpoint(run, fact.checkpoint)
    records.set_run_status(run, "paused")
    pipelines.on_job_message(session, fact.job_id, "training paused")


def _trainer_succeeded(session: Session, fact: events_pb2.TrainerJobSucceeded) -> None:
    if not fact.HasField("model_version"):
        raise InvalidArgument(
            f"trainer job {fact.job_id} succeeded without a model version",
            field_violations=[FieldViolation("model_version", "required")],
        )
    run = records.training_run_for_job(
        session, job_id=fact.job_id, workspace=_workspace(fact), spec=fact.spec
    )
    for checkpoint in fact.checkpoints:
        records.add_checkpoint(run, checkpoint)
    run.metrics = {**run.metrics, **dict(fact.metrics)}
    if fact.HasField("metrics_log"):
        run.metrics_log = convert.to_json(fact.metrics_log)
    if fact.code_version:
        run.code_version = fact.code_version
    if fact.HasField("environment"):
        run.environment = convert.to_json(fact.environment)
    records.set_run_status(run, "succeeded")

    mv = registry_pb2.ModelVersion()
    mv.CopyFrom(fact.model_version)
    spec = fact.spec
    mv.workspace = mv.workspace or run.workspace
    mv.method = mv.method or spec.method
    mv.model = mv.model or spec.output_model
    if not mv.parent_model_version_id and spec.parent_model.id:
        mv.parent_model_version_id = spec.parent_model.id
    if not mv.base_model:
        parent = (
            session.get(models.ModelVersion, mv.parent_model_version_id)
            if mv.parent_model_version_id
            else None
        )
        mv.base_model = parent.base_model if parent is not None else spec.base_model
    if not mv.dataset_version_ids:
        mv.dataset_version_ids.extend(d.id for d in spec.datasets if d.id)
    row, _ = records.register_model_version(session, mv, training_run_id=run.id)
    pipelines.on_job_outcome(session, fact.job_id, "succeeded", {"model_version_id": row.id})


def _trainer_ended(status: str) -> Handler:
    def handle(session: Session, fact: Any) -> None:
        run = records.training_run_for_job(
            session, job_id=fact.job_id, workspace=fact.meta.workspace, spec=None
        )
        reason = fact.reason if status == "cancelled" else fact.error.message
        records.set_run_status(run, status, reason)
        error = None
        if status == "failed":
            error = convert.to_json(fact.error)
        pipelines.on_job_outcome(session, fact.job_id, status, error=error)

    return handle


def _evaluation_completed(session: Session, fact: events_pb2.EvaluatorRunCompleted) -> None:
    run = fact.run
    if not run.workspace:
        run.workspace = fact.meta.workspace
    row, _ = records.record_evaluation(session, run)
    pipelines.on_job_outcome(
        session,
        run.id,
        "succeeded",
        {"evaluation_id": row.id, "passed": str(row.passed).lower()},
    )


def _candidates_published(session: Session, fact: events_pb2.SynthCandidatesPublished) -> None:
    pipelines.on_job_outcome(
        session, fact.job_id, "succeeded", {"feedback_dataset": fact.feedback_dataset}
    )


HANDLERS: dict[str, Handler] = {
    "tunewright.events.v1.IngestDatasetCurated": _dataset_fact(registry_pb2.DATASET_SOURCE_UPLOAD),
    "tunewright.events.v1.IngestDatasetRejected": _failed("ingest"),
    "tunewright.events.v1.SynthDatasetGenerated": _dataset_fact(
        registry_pb2.DATASET_SOURCE_SYNTHETIC
    ),
    "tunewright.events.v1.SynthCandidatesPublished": _candidates_published,
    "tunewright.events.v1.SynthJobFailed": _failed("synth"),
    "tunewright.events.v1.FeedbackDatasetCollected": _dataset_fact(
        registry_pb2.DATASET_SOURCE_FEEDBACK
    ),
    "tunewright.events.v1.TrainerJobStarted": _trainer_started,
    "tunewright.events.v1.TrainerJobCheckpointed": _trainer_checkpointed,
    "tunewright.events.v1.TrainerJobPaused": _trainer_paused,
    "tunewright.events.v1.TrainerJobSucceeded": _trainer_succeeded,
    "tunewright.events.v1.TrainerJobFailed": _trainer_ended("failed"),
    "tunewright.events.v1.TrainerJobCancelled": _trainer_ended("cancelled"),
    "tunewright.events.v1.EvaluatorRunCompleted": _evaluation_completed,
    "tunewright.events.v1.EvaluatorRunFailed": _failed("evaluation", "run_id"),
    # the registry's own facts and pipeline facts are not recorded twice
}
