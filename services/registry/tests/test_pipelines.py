"""The pipeline state machine on a real database: validation with field paths, stages started
in order through outbox requests, outputs wired into later stages, the promotion gate, cancel."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from registry_builders import (
    curated,
    dataset_version,
    evaluation_completed,
    evaluation_run,
    trainer_succeeded,
)
from sqlalchemy import select

from tunewright.core import subjects as s
from tunewright.core.bus import decode_event
from tunewright.core.errors import InvalidArgument
from tunewright.registry import facts, models, pipelines
from tunewright.registry.db import Database

SPEC = """
name: support-tickets
stages:
  - name: curate
    kind: ingest
    spec: {dataset: tickets, source: {uri: "${params.source}"}}
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
  - name: ship
    kind: promote
    alias: production
"""


def _requests(db: Database) -> list[tuple[str, object]]:
    with db.transaction() as session:
        rows = session.scalars(select(models.OutboxEvent).order_by(models.OutboxEvent.seq))
        return [
            (r.subject, decode_event(r.message_type, r.payload))
            for r in rows
            if r.subject.endswith(".requested")
        ]


def _apply(db: Database, message: object, msg_id: str) -> None:
    with db.transaction() as session:
        facts.apply_fact(session, message, durable="registry-facts", msg_id=msg_id)  # type: ignore[arg-type]


def _start(db: Database, spec: str = SPEC) -> str:
    with db.transaction() as session:
        run, _ = pipelines.create_run(
            session,
            run_id="pipe-1",
            spec_yaml=spec,
            parameters={"source": "tw-artifact:sha256:abc"},
        )
        pipelines.advance(session, run)
        return run.id


def _run(db: Database, run_id: str = "pipe-1") -> models.PipelineRun:
    with db.transaction() as session:
        return pipelines.get_run(session, run_id)


def test_invalid_specs_name_every_bad_field() -> None:
    bad = """
name: Bad Name
extra: 1
stages:
  - {name: a, kind: ingest, spec: {dataset: x, nonsense: 1}}
  - {name: a, kind: train, spec: {datasets: [{id: "${stages.zzz.dataset_version_id}"}]}}
  - {name: c, kind: teleport}
  - {name: d, kind: promote}
  - {name: e, kind: train, spec: {base_model: "${params.missing}"}}
"""
    with pytest.raises(InvalidArgument) as info:
        pipelines.parse_spec(bad, {})
    fields = {v.field for v in info.value.field_violations}
    assert {
        "name",
        "extra",
        "stages[0].spec",
        "stages[1].name",
        "stages[1].spec.datasets[0].id",
        "stages[2].kind",
        "stages[3].alias",
        "stages[4].spec.base_model",
    } <= fields
    with pytest.raises(InvalidArgument, match="line 1"):
        pipelines.parse_spec("name: [unclosed", {})


def test_alias_bombs_and_oversized_specs_are_refused_before_they_expand() -> None:
    import time
    from pathlib import Path

    # "billion laughs": 9 levels of 10 aliases each, 10^9 strings from under 1 KB
    lines = ['a0: &a0 "lol"']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\nname: x\nstages: *a9\n"
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as caught:
        pipelines.parse_spec(bomb, {})
    assert time.monotonic() - started < 2  # refused from the node graph, never expanded
    assert caught.value.reason == "PIPELINE_SPEC_TOO_LARGE"
    assert "once its aliases are expanded" in str(caught.value)
    with pytest.raises(InvalidArgument, match="larger than"):
        pipelines.parse_spec("name: x\n" + "# padding\n" * 200_000, {})
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        pipelines.parse_spec("name: " + "[" * 5000 + "]" * 5000, {})
    # an anchor shared by two stages (the example's LoRA block) is fine
    example = Path(__file__).resolve().parents[3] / "examples/support-tickets/pipeline.yaml"
    assert "*lora" in example.read_text()
    parsed = pipelines.parse_spec(example.read_text(), {"source": "tw-artifact:sha256:" + "0" * 64})
    assert [s.name for s in parsed.stages][:2] == ["curate", "sft"]


def test_spec_parameters_give_defaults_that_submitted_values_override(db: Database) -> None:
    spec = SPEC.replace(
        "name: support-tickets\n",
        "name: support-tickets\nparameters: {source: tw-artifact:sha256:default, base: tiny:llama-xs}\n",
    ).replace(
        "base_model: tiny:llama-xs\n      output_model",
        "base_model: ${params.base}\n      output_model",
    )
    parsed = pipelines.parse_spec(spec, {"source": "tw-artifact:sha256:given"})
    assert parsed.parameters == {"source": "tw-artifact:sha256:given", "base": "tiny:llama-xs"}
    run_id = _start(db, spec)
    assert _run(db, run_id).parameters == {
        "source": "tw-artifact:sha256:abc",  # the submitted value wins
        "base": "tiny:llama-xs",
    }
    with pytest.raises(InvalidArgument) as info:
        pipelines.parse_spec(
            SPEC.replace("name: support-tickets\n", "name: x\nparameters: [a]\n"), {}
        )
    assert "parameters" in {v.field for v in info.value.field_violations}


def test_an_invalid_request_from_another_system_keeps_its_trigger(db: Database) -> None:
    with pytest.raises(InvalidArgument) as info:
        pipelines.parse_spec("name: x\nstages: []\n", {})
    with db.transaction() as session:
        pipelines.reject_run(
            session,
            run_id="pipe-bad",
            spec_yaml="name: x\nstages: []\n",
            error=info.value,
            workspace="default",
            requested_by="monitor",
            trigger_event_id="drift-1",
        )
    run = _run(db, "pipe-bad")
    assert (run.status, run.trigger_event_id) == ("failed", "drift-1")


def test_a_pipeline_runs_stage_by_stage_and_promotes_what_passed(db: Database) -> None:
    run_id = _start(db)
    ((subject, ingest),) = _requests(db)
    assert subject == s.INGEST_DATASET_REQUESTED
    assert ingest.spec.source.uri == "tw-artifact:sha256:abc"  # parameter substituted
    assert ingest.spec.workspace == "default"

    _apply(db, curated(ingest.job_id, dataset_version("dv-1")), "f1")
    subject, train = _requests(db)[-1]
    assert subject == s.TRAINER_JOB_REQUESTED
    assert [d.id for d in train.spec.datasets] == ["dv-1"]  # output of the curate stage

    _apply(
        db,
        trainer_succeeded(train.job_id, model_version_id="mv-1", method="sft", datasets=["dv-1"]),
        "f2",
    )
    subject, evaluate = _requests(db)[-1]
    assert subject == s.EVALUATOR_RUN_REQUESTED
    assert evaluate.spec.candidate.model.id == "mv-1"

    _apply(db, evaluation_completed(evaluation_run(evaluate.run_id, "mv-1")), "f3")
    run = _run(db, run_id)
    assert run.status == "succeeded"
    assert run.model_version_id == "mv-1"
    assert [s.status for s in run.stages] == ["succeeded"] * 4
    assert run.stages[3].outputs == {
        "model_version_id": "mv-1",
        "alias": "production",
        "evaluation_id": evaluate.run_id,
    }
    with db.transaction() as session:
        alias = session.get(models.Alias, ("default", "support-bot", "production"))
        assert alias is not None and alias.model_version_id == "mv-1"
        completed = session.scalars(
            select(models.OutboxEvent).where(models.OutboxEvent.subject == s.PIPELINE_RUN_COMPLETED)
        ).all()
        assert len(completed) == 1


def test_a_failing_gate_fails_the_pipeline_at_the_promote_stage(db: Database) -> None:
    _start(db)
    ingest = _requests(db)[-1][1]
    _apply(db, curated(ingest.job_id, dataset_version("dv-1")), "f1")
    train = _requests(db)[-1][1]
    _apply(
        db,
        trainer_succeeded(train.job_id, model_version_id="mv-1", method="sft", datasets=["dv-1"]),
        "f2",
    )
    evaluate = _requests(db)[-1][1]
    _apply(db, evaluation_completed(evaluation_run(evaluate.run_id, "mv-1", passed=False)), "f3")
    run = _run(db)
    assert run.status == "failed"
    assert run.stages[3].status == "failed"
    assert run.error is not None and run.error["reason"] == "NO_PASSING_EVALUATION"


def test_repeated_and_unrelated_facts_change_nothing(db: Database) -> None:
    _start(db)
    ingest = _requests(db)[-1][1]
    fact = curated(ingest.job_id, dataset_version("dv-1"))
    _apply(db, fact, "f1")
    _apply(db, fact, "f1-again")  # the same outcome under another message id
    _apply(db, curated("someone-elses-job", dataset_version("dv-2")), "f2")
    assert len(_requests(db)) == 2  # one ingest request, one training request
    assert _run(db).stages[1].status == "running"


def test_cancel_stops_the_running_stage_and_asks_its_service_to_cancel(db: Database) -> None:
    _start(db)
    with db.transaction() as session:
        run = pipelines.cancel_run(session, "pipe-1", "changed my mind")
        assert run.status == "cancelled"
    with db.transaction() as session:
        subjects = list(session.scalars(select(models.OutboxEvent.subject)))
    assert s.INGEST_CONTROL_REQUESTED in subjects
    ingest = _requests(db)[0][1]
    _apply(db, curated(ingest.job_id, dataset_version("dv-1")), "late")  # too late: ignored
    assert _run(db).status == "cancelled"


DEADLINES = """
name: with-deadlines
stages:
  - {name: curate, kind: ingest, spec: {dataset: tickets}, deadline_seconds: 60}
  - name: sft
    kind: train
    spec: {method: sft, base_model: tiny:llama-xs, output_model: support-bot,
           datasets: [{id: "${stages.curate.dataset_version_id}"}]}
  - {name: review, kind: approve}
  - {name: ship, kind: promote, alias: production}
"""


def _expire(db: Database, after_s: float, stage: int, default_s: float = 3600) -> list[str]:
    with db.transaction() as session:
        started = pipelines.get_run(session, "pipe-1").stages[stage].started_at
        assert started is not None
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        runs = pipelines.expire_overdue_stages(
            session, now=started + timedelta(seconds=after_s), default_deadline_s=default_s
        )
        return [r.id for r in runs]


def test_a_stage_past_its_deadline_fails_the_run_and_asks_its_service_to_cancel(
    db: Database,
) -> None:
    _start(db, DEADLINES)
    assert _expire(db, 59, stage=0) == []  # within its own 60 s (not the 3600 s default)
    assert _expire(db, 61, stage=0) == ["pipe-1"]
    run = _run(db)
    assert run.status == "failed" and run.stages[0].status == "failed"
    assert run.error is not None and run.error["reason"] == "STAGE_DEADLINE_EXCEEDED"
    assert "stage curate (ingest, job " in run.error["message"]
    assert "did not end within 60 s" in run.error["message"]
    with db.transaction() as session:
        control = [
            decode_event(r.message_type, r.payload)
            for r in session.scalars(select(models.OutboxEvent))
            if r.subject == s.INGEST_CONTROL_REQUESTED
        ]
    assert [c.job_id for c in control] == [run.stages[0].job_id]  # type: ignore[attr-defined]
    assert "deadline exceeded" in control[0].reason  # type: ignore[attr-defined]
    # the fact that comes after all changes nothing
    _apply(db, curated(run.stages[0].job_id, dataset_version("dv-1")), "late")
    assert _run(db).status == "failed" and _run(db).stages[1].status == "queued"
    assert _expire(db, 10_000, stage=0) == []  # and a failed run is not failed again


def test_default_deadline_applies_to_service_stages_but_not_to_approvals(db: Database) -> None:
    _start(db, DEADLINES)
    ingest = _requests(db)[0][1]
    _apply(db, curated(ingest.job_id, dataset_version("dv-1")), "f1")  # type: ignore[attr-defined]
    train = _requests(db)[1][1]
    assert _expire(db, 3599, stage=1) == []
    _apply(
        db,
        trainer_succeeded(
            train.job_id,  # type: ignore[attr-defined]
            model_version_id="mv-1",
            method="sft",
            datasets=["dv-1"],
        ),
        "f2",
    )
    assert _run(db).stages[2].status == "running"  # waiting for a person
    assert _expire(db, 30 * 86400, stage=2) == []  # a month: still no deadline
    assert _run(db).status == "running"


def test_deadline_seconds_must_be_a_whole_number_of_seconds() -> None:
    for bad in ("-1", "1.5", "soon", "true"):
        spec = DEADLINES.replace("deadline_seconds: 60", f"deadline_seconds: {bad}")
        with pytest.raises(InvalidArgument) as err:
            pipelines.parse_spec(spec, {})
        assert [v.field for v in err.value.field_violations] == ["stages[0].deadline_seconds"]
    zero = pipelines.parse_spec(
        DEADLINES.replace("deadline_seconds: 60", "deadline_seconds: 0"), {}
    )
    assert zero.stages[0].config["deadline_seconds"] == 0
