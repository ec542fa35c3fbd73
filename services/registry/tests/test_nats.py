"""The registry against a real nats-server: facts applied once even when published twice or
when the consumer dies between commit and ack; a registry SIGKILLed in the middle of a
pipeline picks it up again after restart. The test plays the other services by consuming
their work queues and publishing the facts they would publish."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from registry_builders import (
    curated,
    dataset_version,
    evaluation_completed,
    evaluation_run,
    trainer_succeeded,
)
from sqlalchemy import func, select

from tunewright.core import catalog, subjects
from tunewright.core.bus import Delivery, EventBus, event_meta
from tunewright.events.v1 import events_pb2
from tunewright.registry import models
from tunewright.registry.db import Database
from tunewright.registry.outbox import OutboxPublisher
from tunewright.registry.server import Registry

HERE = Path(__file__).parent


async def _eventually(check: Callable[[], bool], limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def _rows(db: Database, model: type[models.Base]) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_fact_published_twice_and_consumer_killed_before_ack_leaves_one_row(
    nats_url: str, db: Database
) -> None:
    spec = dataclasses.replace(catalog.consumer("registry-facts"), ack_wait_s=1.0)
    bus = await EventBus.connect(nats_url, name="test", consumers=[spec])
    try:
        await bus.declare()
        fact = curated("job-1", dataset_version("dv-1"))
        first = await bus.publish(subjects.INGEST_DATASET_CURATED, fact, key="job-1")
        second = await bus.publish(subjects.INGEST_DATASET_CURATED, fact, key="job-1")
        assert second.duplicate and second.seq == first.seq  # stored once by JetStream

        crash = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(HERE / "registry_crash_consumer.py"), nats_url, db.url, "1.0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert crash.returncode == -signal.SIGKILL, crash.stderr
        assert "applied" in crash.stdout
        assert _rows(db, models.DatasetVersion) == 1  # committed before the crash

        seen: list[int] = []
        app = Registry(db=db, outbox=OutboxPublisher(db, bus.publish))

        async def resumed(delivery: Delivery) -> None:
            seen.append(delivery.num_delivered)
            await app.on_fact(delivery)

        await bus.consume("registry-facts", resumed)
        await _eventually(lambda: bool(seen))
        assert seen == [2]  # the redelivery of the message the crashed process never acked
        assert _rows(db, models.DatasetVersion) == 1
        assert _rows(db, models.ProcessedMessage) == 1
    finally:
        await bus.close()


PIPELINE = """
name: resume-me
stages:
  - {name: curate, kind: ingest, spec: {dataset: tickets}}
  - name: sft
    kind: train
    spec: {method: sft, base_model: "tiny:llama-xs", output_model: support-bot,
           datasets: [{id: "${stages.curate.dataset_version_id}"}]}
  - name: eval
    kind: evaluate
    spec: {candidate: {role: candidate, model: {id: "${stages.sft.model_version_id}"}}}
  - {name: ship, kind: promote, alias: production}
"""


def _start_registry(nats_url: str, db_url: str, data_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TW_")}
    env.update(
        TW_NATS__URL=nats_url,
        TW_DATA_DIR=str(data_dir),
        TW_GRPC__PORT="0",
        TW_REGISTRY__DATABASE_URL=db_url,
        TW_REGISTRY__OUTBOX_POLL_S="0.1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunewright.registry.server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "service serving" in line:
            # keep draining its log: a full pipe would block the registry's next log write
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    raise AssertionError(f"registry did not start (exit {proc.wait()})")


async def _next_request(bus: EventBus, durable: str, timeout_s: float = 30) -> Delivery:
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        await got.put(delivery)

    sub = await bus.consume(durable, take)
    try:
        return await asyncio.wait_for(got.get(), timeout_s)
    finally:
        await sub.stop()


async def test_registry_killed_mid_pipeline_resumes_after_restart(
    nats_url: str, db_url: str, tmp_path: Path
) -> None:
    bus = await EventBus.connect(nats_url, name="test-services")
    registry = _start_registry(nats_url, db_url, tmp_path)
    db = Database(db_url)
    try:
        await bus.publish(
            subjects.PIPELINE_RUN_REQUESTED,
            events_pb2.PipelineRunRequested(
                meta=event_meta(producer="another-system", workspace="default"),
                run_id="pipe-resume",
                spec_yaml=PIPELINE,
                requested_by="another-system",
            ),
            key="pipe-resume",
        )
        ingest = (await _next_request(bus, "ingest-worker")).decode(
            events_pb2.IngestDatasetRequested
        )
        await bus.publish(
            subjects.INGEST_DATASET_CURATED,
            curated(ingest.job_id, dataset_version("dv-1")),
            key=ingest.job_id,
        )
        train = (await _next_request(bus, "trainer-worker")).decode(events_pb2.TrainerJobRequested)
        assert [d.id for d in train.spec.datasets] == ["dv-1"]

        registry.send_signal(signal.SIGKILL)  # mid-pipeline, with the training stage running
        registry.wait()
        await bus.publish(
            subjects.TRAINER_JOB_SUCCEEDED,
            trainer_succeeded(
                train.job_id, model_version_id="mv-1", method="sft", datasets=["dv-1"]
            ),
            key=train.job_id,
        )
        registry = _start_registry(nats_url, db_url, tmp_path)

        # a fact published right after the kill can go to the dead process's pending pull
        # request (the server has not yet seen the connection drop); JetStream redelivers it to
        # the new registry after ack_wait, which is the recovery under test: wait past it
        ack_wait = next(c for c in catalog.CONSUMERS if c.durable == "registry-facts").ack_wait_s
        evaluate = (await _next_request(bus, "evaluator-worker", ack_wait + 30)).decode(
            events_pb2.EvaluatorRunRequested
        )
        assert evaluate.spec.candidate.model.id == "mv-1"
        await bus.publish(
            subjects.EVALUATOR_RUN_COMPLETED,
            evaluation_completed(evaluation_run(evaluate.run_id, "mv-1")),
            key=evaluate.run_id,
        )

        def finished() -> bool:
            with db.transaction() as session:
                run = session.get(models.PipelineRun, "pipe-resume")
                return run is not None and run.status in ("succeeded", "failed")

        await _eventually(finished)
        with db.transaction() as session:
            run = session.get(models.PipelineRun, "pipe-resume")
            assert run is not None
            assert (run.status, run.model_version_id) == ("succeeded", "mv-1"), run.error
            alias = session.get(models.Alias, ("default", "support-bot", "production"))
            assert alias is not None and alias.model_version_id == "mv-1"
    finally:
        registry.terminate()
        registry.wait(timeout=20)
        db.dispose()
        await bus.close()
