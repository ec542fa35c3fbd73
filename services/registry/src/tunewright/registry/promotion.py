"""Aliases, promotion, rollback and the append-only audit log.

``promote`` refuses a model version that has no passing evaluation against the alias's
current holder (or, for an alias nobody holds yet, no passing evaluation at all) unless it is
forced with a reason; forced promotions and rollbacks are audited. ``rollback`` points the
alias back at the assignment before the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunewright.core import subjects
from tunewright.core.bus import event_meta
from tunewright.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from tunewright.events.v1 import events_pb2
from tunewright.registry import convert, models
from tunewright.registry.outbox import enqueue
from tunewright.registry.records import PRODUCER, Page

ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


def audit(
    session: Session,
    *,
    workspace: str,
    actor: str,
    action: str,
    subject_kind: str,
    subject_id: str,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> models.AuditEvent:
    row = models.AuditEvent(
        workspace=workspace,
        actor=actor or "unknown",
        action=action,
        subject_kind=subject_kind,
        subject_id=subject_id,
        reason=reason,
        details=details or {},
    )
    session.add(row)
    session.flush()
    return row


def list_audit(
    session: Session, *, workspace: str, subject_id: str, page: Any
) -> tuple[list[models.AuditEvent], str]:
    query = select(models.AuditEvent).where(models.AuditEvent.workspace == (workspace or "default"))
    if subject_id:
        query = query.where(models.AuditEvent.subject_id == subject_id)
    return Page.of(page).fetch(session, query.order_by(models.AuditEvent.seq))


def passing_evaluation(
    session: Session, candidate_id: str, holder_id: str | None
) -> models.Evaluation | None:
    """Newest passing evaluation of ``candidate_id`` whose baselines include ``holder_id``."""
    rows = session.scalars(
        select(models.Evaluation)
        .where(
            models.Evaluation.candidate_model_version_id == candidate_id,
            models.Evaluation.passed.is_(True),
        )
        .order_by(models.Evaluation.created_at.desc(), models.Evaluation.id.desc())
    )
    for row in rows:
        if holder_id is None or holder_id in row.baselines.values():
            return row
    return None


@dataclass(frozen=True)
class Promotion:
    alias: models.Alias
    previous_model_version_id: str
    evaluation_id: str


def promote(
    session: Session,
    *,
    workspace: str,
    model_version_id: str,
    alias: str,
    force: bool = False,
    reason: str = "",
    actor: str = "",
) -> Promotion:
    import re

    workspace = workspace or "default"
    if not re.match(ALIAS_PATTERN, alias or ""):
        raise InvalidArgument(
            f"alias {alias!r} must match {ALIAS_PATTERN}",
            field_violations=[FieldViolation("alias", f"must match {ALIAS_PATTERN}")],
        )
    if force and not reason.strip():
        raise InvalidArgument(
            "a forced promotion needs a reason (it is recorded in the audit log)",
            reason="FORCE_WITHOUT_REASON",
            field_violations=[FieldViolation("reason", "required when force is set")],
        )
    version = session.get(models.ModelVersion, model_version_id)
    if version is None or version.workspace != workspace:
        raise NotFound(
            f"model version {model_version_id} not found in workspace {workspace}",
            reason="MODEL_VERSION_NOT_FOUND",
        )
    current = session.get(models.Alias, (workspace, version.model, alias))
    holder = current.model_version_id if current else None
    if holder == version.id:
        return Promotion(current, holder, "")  # type: ignore[arg-type]
    evaluation = passing_evaluation(session, version.id, holder)
    if evaluation is None and not force:
        against = f"the current {alias} model {holder}" if holder else "its baseline"
        raise FailedPrecondition(
            f"model version {version.id} has no passing evaluation against {against}; "
            f"evaluate it first, or force the promotion with a reason",
            reason="NO_PASSING_EVALUATION",
        )
    if current is None:
        current = models.Alias(workspace=workspace, model=version.model, alias=alias)
        session.add(current)
    current.model_version_id = version.id
    current.assigned_at = models.utcnow()
    current.assigned_by = actor
    session.add(
        models.AliasAssignment(
            workspace=workspace,
            model=version.model,
            alias=alias,
            model_version_id=version.id,
            assigned_by=actor,
        )
    )
    forced = evaluation is None
    audit(
        session,
        workspace=workspace,
        actor=actor,
        action="force_promote" if forced else "promote",
        subject_kind="model_version",
        subject_id=version.id,
        reason=reason,
        details={
            "alias": alias,
            "model": version.model,
            "previous_model_version_id": holder or "",
            "evaluation_id": evaluation.id if evaluation else "",
        },
    )
    session.flush()
    _announce(
        session,
        current,
        holder or "",
        forced=forced,
        reason=reason,
        evaluation_id=evaluation.id if evaluation else "",
    )
    return Promotion(current, holder or "", evaluation.id if evaluation else "")


def rollback(
    session: Session, *, workspace: str, model: str, alias: str, reason: str = "", actor: str = ""
) -> tuple[models.Alias, str]:
    """Point ``alias`` back at its previous holder; returns (alias row, rolled-back version id)."""
    workspace = workspace or "default"
    current = session.get(models.Alias, (workspace, model, alias))
    if current is None:
        raise NotFound(f"{model} has no alias {alias!r}", reason="ALIAS_NOT_FOUND")
    live = list(
        session.scalars(
            select(models.AliasAssignment)
            .where(
                models.AliasAssignment.workspace == workspace,
                models.AliasAssignment.model == model,
                models.AliasAssignment.alias == alias,
                models.AliasAssignment.rolled_back.is_(False),
            )
            .order_by(models.AliasAssignment.seq.desc())
        )
    )
    if len(live) < 2:
        raise FailedPrecondition(
            f"{model}@{alias} has no earlier assignment to roll back to",
            reason="NOTHING_TO_ROLL_BACK",
        )
    undone, restored = live[0], live[1]
    undone.rolled_back = True
    rolled_back_id = current.model_version_id
    current.model_version_id = restored.model_version_id
    current.assigned_at = models.utcnow()
    current.assigned_by = actor
    audit(
        session,
        workspace=workspace,
        actor=actor,
        action="rollback",
        subject_kind="model_version",
        subject_id=rolled_back_id,
        reason=reason,
        details={
            "alias": alias,
            "model": model,
            "restored_model_version_id": restored.model_version_id,
        },
    )
    session.flush()
    _announce(session, current, rolled_back_id, forced=False, reason=reason, rollback=True)
    return current, rolled_back_id


def _announce(
    session: Session,
    alias: models.Alias,
    previous: str,
    *,
    forced: bool,
    reason: str,
    evaluation_id: str = "",
    rollback: bool = False,
) -> None:
    seq = session.scalar(
        select(models.AuditEvent.seq).order_by(models.AuditEvent.seq.desc()).limit(1)
    )
    enqueue(
        session,
        subjects.REGISTRY_MODEL_PROMOTED,
        events_pb2.RegistryModelPromoted(
            meta=event_meta(producer=PRODUCER, workspace=alias.workspace),
            assignment=convert.alias_pb(alias),
            previous_model_version_id=previous,
            forced=forced,
            reason=reason,
            evaluation_id=evaluation_id,
            rollback=rollback,
        ),
        key=f"audit-{seq}",  # one event per audited alias change
        workspace=alias.workspace,
    )


def list_aliases(session: Session, *, workspace: str, model: str) -> list[models.Alias]:
    query = select(models.Alias).where(models.Alias.workspace == (workspace or "default"))
    if model:
        query = query.where(models.Alias.model == model)
    return list(session.scalars(query.order_by(models.Alias.model, models.Alias.alias)))
