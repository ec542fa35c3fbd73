"""The human approval stage on a real database (SQLite and PostgreSQL): a run waits at its
``approve`` stage until ApprovePipelineStage decides it; approval promotes, rejection fails the
run; both are audited, and the stage cannot be decided twice (also over real gRPC + NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from registry_builders import (
    curated,
    dataset_version,
    evaluation_completed,
    evaluation_run,
    trainer_succeeded,
)
from sqlalchemy import select

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects as s
from tunewright.core.bus import decode_event
from tunewright.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.registry import facts, models, pipelines
from tunewright.registry.db import Database
from tunewright.registry.server import DEFINITION
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

SPEC = """
name: retrain
stages:
  - name: curate
    kind: ingest
    spec: {dataset: tickets, source: {uri: "tw-artifact:sha256:abc"}}
  - name: sft
    kind: train
    spec:
      method: sft
      base_model: tiny:llama-xs
      output_model: support-bot
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
  - name: eval
    kind: evaluate
    spec:
      candidate: {role: candidate, model: {id: "${stages.sft.model_version_id}"}}
      baselines: [{role: base, base_model: tiny:llama-xs}]
  - name: review
    kind: approve
    message: "check ${stages.eval.evaluation_id} before it ships"
  - name: ship
    kind: promote
    alias: production
"""


def _last_request(db: Database) -> object:
    with db.transaction() as session:
        rows = session.scalars(select(models.OutboxEvent).order_by(models.OutboxEvent.seq))
        requests = [r for r in rows if r.subject.endswith(".requested")]
        return decode_event(requests[-1].message_type, requests[-1].payload)


def _apply(db: Database, message: object, msg_id: str) -> None:
    with db.transaction() as session:
        facts.apply_fact(session, message, durable="registry-facts", msg_id=msg_id)  # type: ignore[arg-type]


def _run_to_approval(db: Database) -> None:
    with db.transaction() as session:
        run, _ = pipelines.create_run(session, run_id="pipe-1", spec_yaml=SPEC, parameters={})
        pipelines.advance(session, run)
    _apply(db, curated(_last_request(db).job_id, dataset_version("dv-1")), "f1")  # type: ignore[attr-defined]
    train = _last_request(db)
    _apply(
        db,
        trainer_succeeded(train.job_id, model_version_id="mv-1", method="sft", datasets=["dv-1"]),  # type: ignore[attr-defined]
        "f2",
    )
    _apply(db, evaluation_completed(evaluation_run(_last_request(db).run_id, "mv-1")), "f3")  # type: ignore[attr-defined]


def _decide(db: Database, approved: bool, actor: str = "alice") -> models.PipelineRun:
    with db.transaction() as session:
        return pipelines.approve_stage(
            session,
            run_id="pipe-1",
            stage_name="review",
            approved=approved,
            actor=actor,
            comment="looked at the eval report",
        )


def test_a_run_waits_for_approval_then_promotes(db: Database) -> None:
    _run_to_approval(db)
    with db.transaction() as session:
        run = pipelines.get_run(session, "pipe-1")
        assert run.status == "running"
        assert [st.status for st in run.stages] == ["succeeded"] * 3 + ["running", "queued"]
        assert session.get(models.Alias, ("default", "support-bot", "production")) is None
        waiting = session.scalars(
            select(models.PipelineEvent.message).where(models.PipelineEvent.stage == "review")
        ).all()
        assert any("waiting for approval" in m and "check " in m for m in waiting)

    with pytest.raises(InvalidArgument):
        _decide(db, True, actor=" ")
    with db.transaction() as session, pytest.raises(NotFound, match="approve stages: review"):
        pipelines.approve_stage(
            session, run_id="pipe-1", stage_name="ship", approved=True, actor="a", comment=""
        )

    run = _decide(db, True)
    assert run.status == "succeeded"
    assert run.stages[3].outputs == {"approved_by": "alice"}
    with db.transaction() as session:
        alias = session.get(models.Alias, ("default", "support-bot", "production"))
        assert alias is not None and alias.model_version_id == "mv-1"
        audit = session.scalars(
            select(models.AuditEvent).where(models.AuditEvent.action == "approve_stage")
        ).one()
        assert (audit.actor, audit.subject_id, audit.details) == (
            "alice",
            "pipe-1",
            {"stage": "review"},
        )
        changed = session.scalars(
            select(models.OutboxEvent.key).where(
                models.OutboxEvent.subject == s.PIPELINE_STAGE_CHANGED
            )
        ).all()
        assert len(changed) == len(set(changed))
    with pytest.raises(FailedPrecondition, match="not waiting for approval"):
        _decide(db, True)  # decided once only


def test_a_rejection_fails_the_run_and_promotes_nothing(db: Database) -> None:
    _run_to_approval(db)
    run = _decide(db, False, actor="bob")
    assert run.status == "failed"
    assert run.error is not None and run.error["reason"] == "APPROVAL_REJECTED"
    assert run.stages[4].status == "queued"
    with db.transaction() as session:
        assert session.get(models.Alias, ("default", "support-bot", "production")) is None
        actions = session.scalars(select(models.AuditEvent.action)).all()
        assert "reject_stage" in actions


def test_approve_stage_keys_are_validated() -> None:
    bad = """
name: x
stages:
  - {name: review, kind: approve, spec: {a: 1}, message: 3}
"""
    with pytest.raises(InvalidArgument) as info:
        pipelines.parse_spec(bad, {})
    assert {v.field for v in info.value.field_violations} == {
        "stages[0].spec",
        "stages[0].message",
    }


@pytest.fixture
async def stub(
    nats_url: str, db_url: str, tmp_path: Path
) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:  # type: ignore[type-arg]
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path,
        registry={"database_url": db_url, "outbox_poll_s": 0.1},
    )
    running = await start_service(DEFINITION, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield registry_pb2_grpc.RegistryServiceStub(channel)
    finally:
        await running.stop()


async def test_approve_pipeline_stage_over_grpc(
    stub: registry_pb2_grpc.RegistryServiceStub,  # type: ignore[type-arg]
) -> None:
    spec = "name: gate-only\nstages:\n  - {name: review, kind: approve}\n"
    run = (await stub.SubmitPipelineRun(registry_pb2.SubmitPipelineRunRequest(spec_yaml=spec))).run
    for _ in range(100):
        run = (await stub.GetPipelineRun(registry_pb2.GetPipelineRunRequest(run_id=run.id))).run
        if run.stages[0].status == common_pb2.JOB_STATUS_RUNNING:
            break
        await asyncio.sleep(0.1)
    assert run.stages[0].status == common_pb2.JOB_STATUS_RUNNING  # waiting for a person

    for request, code in (
        (registry_pb2.ApprovePipelineStageRequest(run_id=run.id, stage="review", approved=True),
         grpc.StatusCode.INVALID_ARGUMENT),  # no actor
        (registry_pb2.ApprovePipelineStageRequest(run_id=run.id, stage="nope", actor="alice"),
         grpc.StatusCode.NOT_FOUND),
    ):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ApprovePipelineStage(request)
        assert info.value.code() == code

    decided = (
        await stub.ApprovePipelineStage(
            registry_pb2.ApprovePipelineStageRequest(
                run_id=run.id, stage="review", approved=True, actor="alice", comment="ok"
            )
        )
    ).run
    assert decided.status == common_pb2.JOB_STATUS_SUCCEEDED
    assert decided.stages[0].outputs["approved_by"] == "alice"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApprovePipelineStage(
            registry_pb2.ApprovePipelineStageRequest(
                run_id=run.id, stage="review", approved=True, actor="bob"
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
