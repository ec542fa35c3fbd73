"""The registry's tables (SQLAlchemy 2). Schema changes go through Alembic (``migrations/``).

Rows are the registry's domain objects; ``convert.py`` maps them to and from the API messages.
Nested API structures that the registry stores but never queries (a training spec, an
evaluation's metrics) are kept as JSON in the protobuf JSON mapping, so they stay readable in
SQL and survive additive proto changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# stable constraint names, so migrations can refer to them on both SQLite and PostgreSQL
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Workspace(Timestamped, Base):
    __tablename__ = "workspaces"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")


class DatasetVersion(Timestamped, Base):
    """An immutable dataset version; ``id`` is chosen by its producer (derived from content)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("workspace", "dataset", "version", name="uq_dataset_versions_number"),
        UniqueConstraint("workspace", "dataset", "content_hash", name="uq_dataset_versions_hash"),
    )
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), index=True)
    dataset: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # sft, preference, unpaired, eval
    source: Mapped[str] = mapped_column(String(16))  # upload, synthetic, feedback, traffic
    produced_by: Mapped[str] = mapped_column(String(80), default="")
    splits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # name -> ArtifactRef
    counts: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # RowCounts
    curation_report: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    pii_audit: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    labels: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    # entity type -> PII canary recall of the ingest job; None for versions from before 0002
    canary_recall: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    parents: Mapped[list[DatasetVersionParent]] = relationship(
        foreign_keys="DatasetVersionParent.child_id", cascade="all, delete-orphan", lazy="selectin"
    )


class DatasetVersionParent(Base):
    __tablename__ = "dataset_version_parents"
    child_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    # not a foreign key: a parent may live in another workspace or not be registered yet
    parent_id: Mapped[str] = mapped_column(String(80), primary_key=True)


class TrainingRun(Timestamped, Base):
    __tablename__ = "training_runs"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), index=True)
    job_id: Mapped[str] = mapped_column(String(80), unique=True)
    method: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    code_version: Mapped[str] = mapped_column(String(64), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # trainer.v1.TrainingJobSpec
    history: Mapped[list[Any]] = mapped_column(Json, default=list)  # [StatusTransition]
    checkpoints: Mapped[list[Any]] = mapped_column(Json, default=list)  # [Checkpoint]
    metrics: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    metrics_log: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # trainer.v1.RunEnvironment: libraries, git commit, base-weight sha256 (what reruns need)
    environment: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)


class ModelVersion(Timestamped, Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("workspace", "model", "version", name="uq_model_versions_number"),
    )
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), index=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(64), default="")
    weights: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    tokenizer: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    parent_model_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    training_run_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    chat_template: Mapped[str] = mapped_column(Text, default="")
    eos_token: Mapped[str] = mapped_column(String(64), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    datasets: Mapped[list[ModelVersionDataset]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )


class ModelVersionDataset(Base):
    __tablename__ = "model_version_datasets"
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    dataset_version_id: Mapped[str] = mapped_column(String(80), primary_key=True)


class Alias(Base):
    """Current holder of an alias (``production``, ``candidate``) of a model name."""

    __tablename__ = "aliases"
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    assigned_by: Mapped[str] = mapped_column(String(128), default="")


class AliasAssignment(Base):
    """Every assignment of an alias, oldest first; rollback walks back through it."""

    __tablename__ = "alias_assignments"
    __table_args__ = (Index("ix_alias_assignments_alias", "workspace", "model", "alias"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    assigned_by: Mapped[str] = mapped_column(String(128), default="")
    # set when a rollback undid this assignment
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)


class Evaluation(Timestamped, Base):
    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # the evaluator's run id
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), index=True)
    candidate_model_version_id: Mapped[str] = mapped_column(String(80), index=True)
    baselines: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # role -> id or URI
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    run: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # evaluator.v1.EvaluationRun


class PipelineRun(Timestamped, Base):
    __tablename__ = "pipeline_runs"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    workspace: Mapped[str] = mapped_column(ForeignKey("workspaces.name"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    spec_yaml: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    model_version_id: Mapped[str] = mapped_column(String(80), default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    trigger_event_id: Mapped[str] = mapped_column(String(128), default="")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stages: Mapped[list[PipelineStage]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="PipelineStage.position"
    )


class PipelineStage(Base):
    __tablename__ = "pipeline_stages"
    __table_args__ = (UniqueConstraint("job_id", name="uq_pipeline_stages_job_id"),)
    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    # id of the job this stage asked another service for (derived, so a retry asks again)
    job_id: Mapped[str] = mapped_column(String(80))
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PipelineEvent(Base):
    """What StreamPipelineRunEvents replays: one row per stage change or run message."""

    __tablename__ = "pipeline_events"
    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stage: Mapped[str] = mapped_column(String(64), default="")
    level: Mapped[str] = mapped_column(String(8), default="info")
    status: Mapped[str] = mapped_column(String(16), default="")
    message: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    """Append-only (UPDATE and DELETE are refused by triggers created in the migration)."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    workspace: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class ProcessedMessage(Base):
    """Facts already applied, written in the same transaction as their effect (exactly once)."""

    __tablename__ = "processed_messages"
    durable: Mapped[str] = mapped_column(String(64), primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxEvent(Base):
    """Events to publish, written with the change they announce; a loop publishes them."""

    __tablename__ = "outbox"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(256))
    message_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column()
    correlation_id: Mapped[str] = mapped_column(String(64), default="")
    workspace: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
