"""A job's failed / cancelled fact survives a NATS outage at the end of the job: the real
nats-server goes away as the job fails (or is cancelled) and comes back seconds later. The
job is stored as ended only once its fact is out, so a redelivered request never finds a job
that ended without announcing it (which left the pipeline waiting forever)."""

from __future__ import annotations

import asyncio
from typing import Any

from tunewright.core import subjects
from tunewright.trainer import convert
from tunewright.trainer.jobs import JobStatus
from tunewright.trainer.preflight import DatasetInfo
from tunewright.trainer.v1 import trainer_pb2

from .conftest import Harness, sft_rows, sft_spec

DOWN_S = 4.0


class _GoneWithNats:
    """Resolves nothing, and takes NATS away while doing so: the job fails pre-flight (its
    dataset vanished) right as the server goes down."""

    def __init__(self, blip: Any) -> None:
        self.blip = blip

    async def resolve(self, dataset_id: str) -> DatasetInfo | None:
        self.blip.begin(down_s=DOWN_S)
        return None


async def _fact(harness: Harness, subject: str, job_id: str) -> Any:
    facts = await harness.facts(subject, expect=1, timeout_s=10)
    return next(f for f in facts if f.job_id == job_id)


# nats_blip before harness: the harness's clients close while the restarted server is up
async def test_a_job_failing_during_a_nats_outage_is_announced_then_stored(
    nats_blip: Any, harness: Harness
) -> None:
    running = await harness.start_worker()
    trainer = running.context.resources["trainer"]
    await harness.dataset("dv-ok", "sft", sft_rows(8))
    trainer.worker.datasets = _GoneWithNats(nats_blip)  # the worker's pre-flight only
    submitted = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=sft_spec("dv-ok"))
    )
    job_id = submitted.job.id
    for _ in range(100):
        if nats_blip.begun:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(3.0)  # longer than one publish's own retries
    assert trainer.store.get(job_id).status is JobStatus.RUNNING  # not failed unannounced
    await nats_blip.over()
    for _ in range(300):
        if trainer.store.get(job_id).status is JobStatus.FAILED:
            break
        await asyncio.sleep(0.1)
    job = trainer.store.get(job_id)
    assert job.status is JobStatus.FAILED and job.error_reason == "INVALID_SPEC"
    fact = await _fact(harness, subjects.TRAINER_JOB_FAILED, job_id)
    assert fact.error.reason == "INVALID_SPEC"


async def test_a_job_cancelled_during_a_nats_outage_is_announced_then_stored(
    nats_blip: Any, harness: Harness
) -> None:
    running = await harness.start_worker()
    trainer = running.context.resources["trainer"]
    spec = sft_spec("dv-none")
    job = trainer.new_job(
        "job-cancel", convert.spec_from_pb(spec), spec.SerializeToString(), JobStatus.QUEUED
    )
    trainer.store.create(job)
    nats_blip.begin(down_s=DOWN_S)
    cancelling = asyncio.create_task(trainer.worker.finish_cancelled(job, "no longer needed"))
    await asyncio.sleep(3.0)
    assert not cancelling.done()
    assert trainer.store.get("job-cancel").status is JobStatus.QUEUED
    await nats_blip.over()
    ended = await asyncio.wait_for(cancelling, 60)
    assert ended.status is JobStatus.CANCELLED
    assert trainer.store.get("job-cancel").status is JobStatus.CANCELLED
    fact = await _fact(harness, subjects.TRAINER_JOB_CANCELLED, "job-cancel")
    assert fact.reason == "no longer needed"
    # cancelling again changes nothing and announces nothing new
    again = await trainer.worker.finish_cancelled(job, "twice")
    assert again.status is JobStatus.CANCELLED
    events = [e.message for e in trainer.store.events("job-cancel")]
    assert events.count("cancelled: no longer needed") == 1
