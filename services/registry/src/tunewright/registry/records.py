"""Registering and reading the registry's entities: workspaces, dataset versions, training
runs, model versions, evaluations. Every function works inside the caller's transaction.

Registration is idempotent: registering what is already there (same id, or the same dataset
content) returns the existing row with ``created=False`` and writes nothing, so a repeated
fact or a retried RPC never makes a second row.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import event_meta
from tunewright.core.errors import FieldViolation, InvalidArgument, NotFound
from tunewright.core.ids import new_id
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.events.v1 import events_pb2
from tunewright.registry import convert, models
from tunewright.registry.outbox import enqueue
from tunewright.registry.v1 import registry_pb2
from tunewright.trainer.v1 import trainer_pb2

PRODUCER = "registry"
MAX_PAGE = 1000
DEFAULT_PAGE = 50
T = TypeVar("T")


# --- paging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    size: int
    offset: int

    @classmethod
    def of(cls, request: common_pb2.PageRequest) -> Page:
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size must be >= 0",
                field_violations=[FieldViolation("page.page_size", "must be >= 0")],
            )
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        offset = 0
        if request.page_token:
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(request.page_token))["o"])
            except (ValueError, KeyError, TypeError):
                raise InvalidArgument(
                    "page_token is not one this server issued",
                    field_violations=[FieldViolation("page.page_token", "invalid token")],
                ) from None
        return cls(size, offset)

    def fetch(self, session: Session, query: Select[tuple[T]]) -> tuple[list[T], str]:
        rows = list(session.scalars(query.offset(self.offset).limit(self.size + 1)))
        token = ""
        if len(rows) > self.size:
            rows = rows[: self.size]
            raw = json.dumps({"o": self.offset + self.size}).encode()
            token = base64.urlsafe_b64encode(raw).decode()
        return rows, token


# --- workspaces ---------------------------------------------------------------------------


def ensure_workspace(session: Session, name: str, description: str = "") -> models.Workspace:
    name = name or "default"
    row = session.get(models.Workspace, name)
    if row is not None:
        return row
    # two transactions may create the same new workspace at once (a gRPC call racing the facts
    # consumer): insert in a savepoint and, if the other one won, use its row
    try:
        with session.begin_nested():
            row = models.Workspace(name=name, description=description)
            session.add(row)
    except IntegrityError:
        row = session.get(models.Workspace, name)
        if row is None:
            raise
    return row


# --- dataset versions ---------------------------------------------------------------------


def register_dataset_version(
    session: Session, dv: registry_pb2.DatasetVersion
) -> tuple[models.DatasetVersion, bool]:
    violations = [
        FieldViolation(f"dataset_version.{name}", "required")
        for name in ("id", "dataset", "content_hash")
        if not getattr(dv, name)
    ]
    if dv.kind == common_pb2.DATASET_KIND_UNSPECIFIED:
        violations.append(FieldViolation("dataset_version.kind", "required"))
    if violations:
        raise InvalidArgument("incomplete dataset version", field_violations=violations)
    workspace = ensure_workspace(session, dv.workspace).name
    existing = session.get(models.DatasetVersion, dv.id) or session.scalar(
        select(models.DatasetVersion).where(
            models.DatasetVersion.workspace == workspace,
            models.DatasetVersion.dataset == dv.dataset,
            models.DatasetVersion.content_hash == dv.content_hash,
        )
    )
    if existing is not None:
        return existing, False
    number = session.scalar(
        select(func.coalesce(func.max(models.DatasetVersion.version), 0)).where(
            models.DatasetVersion.workspace == workspace,
            models.DatasetVersion.dataset == dv.dataset,
        )
    )
    row = models.DatasetVersion(
        id=dv.id,
        workspace=workspace,
        dataset=dv.dataset,
        version=int(number or 0) + 1,
        content_hash=dv.content_hash,
        kind=convert.KIND_NAMES[dv.kind],
        source=convert.SOURCE_NAMES.get(dv.source, "upload"),
        produced_by=dv.produced_by,
        splits={k: convert.to_json(v) for k, v in dv.splits.items()},
        counts=convert.to_json(dv.counts),
        curation_report=convert.to_json(dv.curation_report)
        if dv.HasField("curation_report")
        else None,
        pii_audit=convert.to_json(dv.pii_audit) if dv.HasField("pii_audit") else None,
        labels=dict(dv.labels),
        canary_recall=dict(dv.canary_recall),
        parents=[
            models.DatasetVersionParent(child_id=dv.id, parent_id=p)
            for p in dict.fromkeys(dv.parent_version_ids)
        ],
    )
    session.add(row)
    session.flush()
    enqueue(
        session,
        subjects.REGISTRY_DATASET_REGISTERED,
        events_pb2.RegistryDatasetRegistered(
            meta=event_meta(producer=PRODUCER, workspace=workspace),
            dataset_version=convert.dataset_version_pb(row),
        ),
        key=row.id,
        workspace=workspace,
    )
    return row, True


def get_dataset_version(
    session: Session, ref: common_pb2.DatasetVersionRef, workspace: str = ""
) -> models.DatasetVersion:
    if ref.id:
        row = session.get(models.DatasetVersion, ref.id)
    elif ref.dataset:
        query = select(models.DatasetVersion).where(
            models.DatasetVersion.workspace == (workspace or "default"),
            models.DatasetVersion.dataset == ref.dataset,
        )
        if ref.version:
            query = query.where(models.DatasetVersion.version == ref.version)
        row = session.scalar(query.order_by(models.DatasetVersion.version.desc()).limit(1))
    else:
        raise InvalidArgument(
            "a dataset version is referred to by id or by dataset name",
            field_violations=[FieldViolation("ref", "set id or dataset")],
        )
    if row is None:
        raise NotFound(
            f"dataset version {ref.id or ref.dataset} not found", reason="DATASET_NOT_FOUND"
        )
    return row


def list_dataset_versions(
    session: Session, request: registry_pb2.ListDatasetVersionsRequest
) -> tuple[list[models.DatasetVersion], str]:
    query = select(models.DatasetVersion).where(
        models.DatasetVersion.workspace == (request.workspace or "default")
    )
    if request.dataset:
        query = query.where(models.DatasetVersion.dataset == request.dataset)
    if request.kind:
        query = query.where(models.DatasetVersion.kind == convert.KIND_NAMES[request.kind])
    query = query.order_by(models.DatasetVersion.dataset, models.DatasetVersion.version)
    return Page.of(request.page).fetch(session, query)


# --- training runs ------------------------------------------------------------------------


def training_run_for_job(
    session: Session, *, job_id: str, workspace: str, spec: trainer_pb2.TrainingJobSpec | None
) -> models.TrainingRun:
    """The run of trainer job ``job_id``, created (status queued) on first sight."""
    row = session.scalar(select(models.TrainingRun).where(models.TrainingRun.job_id == job_id))
    if row is None:
        ensure_workspace(session, workspace)
        row = models.TrainingRun(
            id=new_id("run"),
            workspace=workspace or "default",
            job_id=job_id,
            status="queued",
            history=[],
            checkpoints=[],
        )
        session.add(row)
    if spec is not None and spec.ByteSize():
        row.spec = convert.to_json(spec)
        row.method = spec.method
        row.seed = spec.seed
    session.flush()
    return row


def set_run_status(row: models.TrainingRun, status: str, reason: str = "") -> None:
    if row.status == status:
        return
    now = datetime.now(UTC)
    transition = common_pb2.StatusTransition(status=convert.status_value(status), reason=reason)
    transition.at.FromDatetime(now)
    row.history = [*row.history, convert.to_json(transition)]
    row.status = status
    if status in ("succeeded", "failed", "cancelled"):
        row.finished_at = now


def add_checkpoint(row: models.TrainingRun, checkpoint: trainer_pb2.Checkpoint) -> None:
    # the JSON mapping renders int64 as a string
    if any(str(c.get("step", 0)) == str(checkpoint.step) for c in row.checkpoints):
        return
    row.checkpoints = [*row.checkpoints, convert.to_json(checkpoint)]


def register_training_run(session: Session, run: registry_pb2.TrainingRun) -> models.TrainingRun:
    if not run.job_id:
        raise InvalidArgument(
            "a training run needs the trainer job id",
            field_violations=[FieldViolation("run.job_id", "required")],
        )
    row = training_run_for_job(session, job_id=run.job_id, workspace=run.workspace, spec=run.spec)
    if run.status:
        set_run_status(row, convert.status_name(run.status))
    if run.code_version:
        row.code_version = run.code_version
    if run.HasField("environment"):
        row.environment = convert.to_json(run.environment)
    for checkpoint in run.checkpoints:
        add_checkpoint(row, checkpoint)
    if run.metrics:
        row.metrics = {**row.metrics, **dict(run.metrics)}
    return row


def get_training_run(session: Session, run_id: str) -> models.TrainingRun:
    row = session.get(models.TrainingRun, run_id) or session.scalar(
        select(models.TrainingRun).where(models.TrainingRun.job_id == run_id)
    )
    if row is None:
        raise NotFound(f"training run {run_id} not found", reason="TRAINING_RUN_NOT_FOUND")
    return row


def list_training_runs(
    session: Session, request: registry_pb2.ListTrainingRunsRequest
) -> tuple[list[models.TrainingRun], str]:
    query = select(models.TrainingRun).where(
        models.TrainingRun.workspace == (request.workspace or "default")
    )
    if request.statuses:
        names = [convert.status_name(s) for s in request.statuses]
        query = query.where(models.TrainingRun.status.in_(names))
    return Page.of(request.page).fetch(session, query.order_by(models.TrainingRun.id))


# --- model versions -----------------------------------------------------------------------


def register_model_version(
    session: Session, mv: registry_pb2.ModelVersion, *, training_run_id: str = ""
) -> tuple[models.ModelVersion, bool]:
    violations = [
        FieldViolation(f"model_version.{name}", "required")
        for name in ("model", "base_model")
        if not getattr(mv, name)
    ]
    if violations:
        raise InvalidArgument("incomplete model version", field_violations=violations)
    if mv.id:
        existing = session.get(models.ModelVersion, mv.id)
        if existing is not None:
            return existing, False
    workspace = ensure_workspace(session, mv.workspace).name
    if (
        mv.parent_model_version_id
        and session.get(models.ModelVersion, mv.parent_model_version_id) is None
    ):
        raise InvalidArgument(
            f"parent model version {mv.parent_model_version_id} is not registered",
            reason="PARENT_MODEL_NOT_FOUND",
            field_violations=[FieldViolation("model_version.parent_model_version_id", "unknown")],
        )
    number = session.scalar(
        select(func.coalesce(func.max(models.ModelVersion.version), 0)).where(
            models.ModelVersion.workspace == workspace, models.ModelVersion.model == mv.model
        )
    )
    row = models.ModelVersion(
        id=mv.id or new_id("mv"),
        workspace=workspace,
        model=mv.model,
        version=int(number or 0) + 1,
        base_model=mv.base_model,
        method=mv.method,
        weights=convert.to_json(mv.weights) if mv.HasField("weights") else None,
        tokenizer=convert.to_json(mv.tokenizer) if mv.HasField("tokenizer") else None,
        parent_model_version_id=mv.parent_model_version_id or None,
        training_run_id=training_run_id or mv.training_run_id or None,
        chat_template=mv.chat_template,
        eos_token=mv.eos_token,
        labels=dict(mv.labels),
    )
    row.datasets = [
        models.ModelVersionDataset(model_version_id=row.id, dataset_version_id=d)
        for d in dict.fromkeys(mv.dataset_version_ids)
    ]
    session.add(row)
    session.flush()
    enqueue(
        session,
        subjects.REGISTRY_MODEL_REGISTERED,
        events_pb2.RegistryModelRegistered(
            meta=event_meta(producer=PRODUCER, workspace=workspace),
            model_version=convert.model_version_pb(row, []),
        ),
        key=row.id,
        workspace=workspace,
    )
    return row, True


def aliases_of(session: Session, model_version_id: str) -> list[str]:
    return list(
        session.scalars(
            select(models.Alias.alias).where(models.Alias.model_version_id == model_version_id)
        )
    )


def get_model_version(
    session: Session, ref: common_pb2.ModelVersionRef, workspace: str = ""
) -> models.ModelVersion:
    workspace = workspace or "default"
    row: models.ModelVersion | None
    if ref.id:
        row = session.get(models.ModelVersion, ref.id)
    elif ref.model and ref.alias:
        alias = session.get(models.Alias, (workspace, ref.model, ref.alias))
        row = session.get(models.ModelVersion, alias.model_version_id) if alias else None
    elif ref.model:
        query = select(models.ModelVersion).where(
            models.ModelVersion.workspace == workspace, models.ModelVersion.model == ref.model
        )
        if ref.version:
            query = query.where(models.ModelVersion.version == ref.version)
        row = session.scalar(query.order_by(models.ModelVersion.version.desc()).limit(1))
    else:
        raise InvalidArgument(
            "a model version is referred to by id, or by model name with a version or alias",
            field_violations=[FieldViolation("ref", "set id or model")],
        )
    if row is None:
        what = ref.id or f"{ref.model}{'@' + ref.alias if ref.alias else ''}"
        raise NotFound(f"model version {what} not found", reason="MODEL_VERSION_NOT_FOUND")
    return row


def list_model_versions(
    session: Session, request: registry_pb2.ListModelVersionsRequest
) -> tuple[list[models.ModelVersion], str]:
    query = select(models.ModelVersion).where(
        models.ModelVersion.workspace == (request.workspace or "default")
    )
    if request.model:
        query = query.where(models.ModelVersion.model == request.model)
    if request.method:
        query = query.where(models.ModelVersion.method == request.method)
    query = query.order_by(models.ModelVersion.model, models.ModelVersion.version)
    return Page.of(request.page).fetch(session, query)


# --- evaluations --------------------------------------------------------------------------


def _baselines(run: evaluator_pb2.EvaluationRun) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for baseline in run.spec.baselines:
        out[baseline.role or "baseline"] = baseline.model.id or baseline.base_model
    for result in run.results:  # results name the version actually evaluated
        if result.role != "candidate" and result.model_version_id:
            out[result.role] = result.model_version_id
    return out


def record_evaluation(
    session: Session, run: evaluator_pb2.EvaluationRun
) -> tuple[models.Evaluation, bool]:
    if not run.id:
        raise InvalidArgument(
            "an evaluation needs its run id",
            field_violations=[FieldViolation("run.id", "required")],
        )
    existing = session.get(models.Evaluation, run.id)
    if existing is not None:
        return existing, False
    candidate = run.spec.candidate.model.id or next(
        (r.model_version_id for r in run.results if r.role == "candidate"), ""
    )
    if not candidate:
        raise InvalidArgument(
            "an evaluation must name its candidate model version",
            field_violations=[FieldViolation("run.spec.candidate.model.id", "required")],
        )
    workspace = ensure_workspace(session, run.workspace).name
    row = models.Evaluation(
        id=run.id,
        workspace=workspace,
        candidate_model_version_id=candidate,
        baselines=_baselines(run),
        passed=run.verdict.passed,
        run=convert.to_json(run),
    )
    session.add(row)
    session.flush()
    return row, True


def get_evaluation(session: Session, evaluation_id: str) -> models.Evaluation:
    row = session.get(models.Evaluation, evaluation_id)
    if row is None:
        raise NotFound(f"evaluation {evaluation_id} not found", reason="EVALUATION_NOT_FOUND")
    return row


def list_evaluations(
    session: Session, request: registry_pb2.ListEvaluationsRequest
) -> tuple[list[models.Evaluation], str]:
    query = select(models.Evaluation).where(
        models.Evaluation.workspace == (request.workspace or "default")
    )
    if request.candidate_model_version_id:
        query = query.where(
            models.Evaluation.candidate_model_version_id == request.candidate_model_version_id
        )
    return Page.of(request.page).fetch(
        session, query.order_by(models.Evaluation.created_at, models.Evaluation.id)
    )


def list_workspaces(
    session: Session, page: common_pb2.PageRequest
) -> tuple[Sequence[models.Workspace], str]:
    return Page.of(page).fetch(session, select(models.Workspace).order_by(models.Workspace.name))
