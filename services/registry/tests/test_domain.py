"""Registry domain on a real database (SQLite and PostgreSQL): idempotent registration,
version numbering, paging, facts applied once, lineage, promotion, rollback and audit."""

from __future__ import annotations

import pytest
from registry_builders import (
    curated,
    dataset_version,
    evaluation_completed,
    evaluation_run,
    trainer_succeeded,
)
from sqlalchemy import func, select

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects as s
from tunewright.core.errors import FailedPrecondition, InvalidArgument
from tunewright.registry import convert, facts, lineage, models, promotion, records
from tunewright.registry.db import Database
from tunewright.registry.v1 import registry_pb2

DURABLE = "registry-facts"


def _count(db: Database, model: type[models.Base]) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _apply(db: Database, message: object, msg_id: str) -> bool:
    with db.transaction() as session:
        return facts.apply_fact(session, message, durable=DURABLE, msg_id=msg_id)  # type: ignore[arg-type]


def test_dataset_versions_are_numbered_and_registered_once(db: Database) -> None:
    with db.transaction() as session:
        a, created_a = records.register_dataset_version(session, dataset_version("dv-a"))
        again, created_again = records.register_dataset_version(session, dataset_version("dv-a"))
        same_content = dataset_version("dv-other-id")
        same_content.content_hash = "hash-dv-a"
        dup, created_dup = records.register_dataset_version(session, same_content)
        b, _ = records.register_dataset_version(session, dataset_version("dv-b"))
        assert (a.version, b.version) == (1, 2)
        assert created_a and not created_again and not created_dup
        assert again.id == dup.id == "dv-a"
        latest = records.get_dataset_version(
            session, common_pb2.DatasetVersionRef(dataset="tickets")
        )
        assert latest.id == "dv-b"
    assert _count(db, models.DatasetVersion) == 2


def test_a_dataset_version_keeps_its_pii_canary_recall(db: Database) -> None:
    dv = dataset_version("dv-canary")
    dv.canary_recall.update({"EMAIL_ADDRESS": 1.0, "PERSON": 0.65})
    with db.transaction() as session:
        records.register_dataset_version(session, dv)
        plain, _ = records.register_dataset_version(session, dataset_version("dv-plain"))
    with db.transaction() as session:
        row = records.get_dataset_version(session, common_pb2.DatasetVersionRef(id=dv.id))
        stored = convert.dataset_version_pb(row)
        assert dict(stored.canary_recall) == {"EMAIL_ADDRESS": 1.0, "PERSON": 0.65}
        assert dict(convert.dataset_version_pb(plain).canary_recall) == {}


def test_incomplete_dataset_version_names_the_missing_fields(db: Database) -> None:
    with pytest.raises(InvalidArgument) as info, db.transaction() as session:
        records.register_dataset_version(session, registry_pb2.DatasetVersion(dataset="x"))
    fields = {v.field for v in info.value.field_violations}
    assert fields == {"dataset_version.id", "dataset_version.content_hash", "dataset_version.kind"}


def test_paging_walks_every_row_once(db: Database) -> None:
    with db.transaction() as session:
        for i in range(7):
            records.register_dataset_version(session, dataset_version(f"dv-{i}"))
    seen, token = [], ""
    while True:
        with db.transaction() as session:
            request = registry_pb2.ListDatasetVersionsRequest(
                page=common_pb2.PageRequest(page_size=3, page_token=token)
            )
            rows, token = records.list_dataset_versions(session, request)
            seen += [r.version for r in rows]
        if not token:
            break
    assert seen == [1, 2, 3, 4, 5, 6, 7]


def test_the_same_fact_twice_leaves_one_row(db: Database) -> None:
    fact = curated("job-1", dataset_version("dv-1"))
    assert _apply(db, fact, "msg-1") is True
    assert _apply(db, fact, "msg-1") is False  # redelivery: same message id
    assert _apply(db, fact, "msg-1-republished") is True  # another id, same entity
    assert _count(db, models.DatasetVersion) == 1
    assert _count(db, models.ProcessedMessage) == 2
    # the registration announced itself once (outbox)
    with db.transaction() as session:
        subjects = list(session.scalars(select(models.OutboxEvent.subject)))
    assert subjects == [s.REGISTRY_DATASET_REGISTERED]


def _train_sft_then_dpo(db: Database) -> None:
    _apply(db, curated("ingest-sft", dataset_version("dv-sft")), "m1")
    _apply(
        db,
        trainer_succeeded("job-sft", model_version_id="mv-sft", method="sft", datasets=["dv-sft"]),
        "m2",
    )
    _apply(
        db,
        curated(
            "feedback-1",
            dataset_version(
                "dv-dpo",
                dataset="prefs",
                kind=common_pb2.DATASET_KIND_PREFERENCE,
                parents=("dv-sft",),
            ),
        ),
        "m3",
    )
    _apply(
        db,
        trainer_succeeded(
            "job-dpo", model_version_id="mv-dpo", method="dpo", datasets=["dv-dpo"], parent="mv-sft"
        ),
        "m4",
    )


def test_trainer_success_registers_run_and_model(db: Database) -> None:
    _train_sft_then_dpo(db)
    with db.transaction() as session:
        dpo = session.get(models.ModelVersion, "mv-dpo")
        assert dpo is not None
        assert (dpo.model, dpo.version, dpo.method) == ("support-bot", 2, "dpo")
        assert dpo.base_model == "tiny:llama-xs"  # inherited from the SFT parent
        assert dpo.parent_model_version_id == "mv-sft"
        assert dpo.eos_token == "<|im_end|>"
        run = records.get_training_run(session, "job-dpo")
        assert run.status == "succeeded" and run.checkpoints and run.code_version == "0.1.0"
        assert [h["status"] for h in run.history] == ["JOB_STATUS_SUCCEEDED"]


def test_lineage_of_a_dpo_model_reaches_the_sft_curation_report(db: Database) -> None:
    _train_sft_then_dpo(db)
    with db.transaction() as session:
        graph = lineage.lineage(session, session.get(models.ModelVersion, "mv-dpo"))  # type: ignore[arg-type]
    edges = {(e.from_id, e.relation, e.to_id) for e in graph.edges}
    report = dataset_version("dv-sft").curation_report.uri
    # DPO dataset version -> SFT parent model -> SFT dataset version -> curation report
    assert ("mv-dpo", "trained_on", "dv-dpo") in edges
    assert ("mv-dpo", "parent_model", "mv-sft") in edges
    assert ("mv-sft", "trained_on", "dv-sft") in edges
    assert ("dv-sft", "curation_report", report) in edges
    assert ("dv-dpo", "derived_from", "dv-sft") in edges
    assert ("mv-sft", "base_model", "tiny:llama-xs") in edges
    kinds = {n.id: n.kind for n in graph.nodes.values()}
    assert kinds[report] == registry_pb2.LINEAGE_NODE_KIND_ARTIFACT
    assert kinds["mv-sft"] == registry_pb2.LINEAGE_NODE_KIND_MODEL_VERSION


def test_promotion_needs_a_passing_evaluation_unless_forced_and_rollback_restores(
    db: Database,
) -> None:
    _train_sft_then_dpo(db)
    with db.transaction() as session, pytest.raises(FailedPrecondition) as refused:
        promotion.promote(
            session, workspace="default", model_version_id="mv-sft", alias="production"
        )
    assert refused.value.reason == "NO_PASSING_EVALUATION"

    _apply(db, evaluation_completed(evaluation_run("eval-sft", "mv-sft")), "e1")
    with db.transaction() as session:
        first = promotion.promote(
            session,
            workspace="default",
            model_version_id="mv-sft",
            alias="production",
            actor="alice",
        )
        assert first.evaluation_id == "eval-sft" and first.previous_model_version_id == ""

    # the DPO model was evaluated against the base, not against the production holder
    _apply(db, evaluation_completed(evaluation_run("eval-dpo-base", "mv-dpo")), "e2")
    with db.transaction() as session, pytest.raises(FailedPrecondition, match="mv-sft"):
        promotion.promote(
            session, workspace="default", model_version_id="mv-dpo", alias="production"
        )
    with db.transaction() as session, pytest.raises(InvalidArgument, match="reason"):
        promotion.promote(
            session, workspace="default", model_version_id="mv-dpo", alias="production", force=True
        )
    with db.transaction() as session:
        forced = promotion.promote(
            session,
            workspace="default",
            model_version_id="mv-dpo",
            alias="production",
            force=True,
            reason="hotfix approved by on-call",
            actor="bob",
        )
        assert forced.previous_model_version_id == "mv-sft"

    with db.transaction() as session:
        alias, rolled_back = promotion.rollback(
            session,
            workspace="default",
            model="support-bot",
            alias="production",
            reason="regression",
            actor="carol",
        )
        assert (alias.model_version_id, rolled_back) == ("mv-sft", "mv-dpo")
        with pytest.raises(FailedPrecondition):
            promotion.rollback(
                session, workspace="default", model="support-bot", alias="production"
            )
        audit, _ = promotion.list_audit(
            session, workspace="default", subject_id="", page=common_pb2.PageRequest()
        )
        actions = [(a.action, a.actor, a.reason) for a in audit]
    assert actions == [
        ("promote", "alice", ""),
        ("force_promote", "bob", "hotfix approved by on-call"),
        ("rollback", "carol", "regression"),
    ]


def test_a_passing_evaluation_against_the_holder_allows_promotion(db: Database) -> None:
    _train_sft_then_dpo(db)
    _apply(db, evaluation_completed(evaluation_run("eval-sft", "mv-sft")), "e1")
    _apply(db, evaluation_completed(evaluation_run("eval-dpo", "mv-dpo", baseline="mv-sft")), "e2")
    _apply(
        db,
        evaluation_completed(evaluation_run("eval-bad", "mv-dpo", baseline="mv-sft", passed=False)),
        "e3",
    )
    with db.transaction() as session:
        promotion.promote(
            session, workspace="default", model_version_id="mv-sft", alias="production"
        )
        result = promotion.promote(
            session, workspace="default", model_version_id="mv-dpo", alias="production"
        )
        assert result.evaluation_id == "eval-dpo"
        assert records.aliases_of(session, "mv-dpo") == ["production"]
