"""Cancel, pause / resume, a worker killed with SIGKILL mid-job, several workers sharing the
queue: each ends with the right facts, and never two models for one job."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import event_meta
from tunewright.events.v1 import events_pb2
from tunewright.trainer.v1 import trainer_pb2

from .conftest import Harness, finished, sft_rows, sft_spec


def _long(dataset_id: str, steps: int, every: int) -> trainer_pb2.TrainingJobSpec:
    spec = sft_spec(dataset_id, checkpoint_every_steps=every)
    spec.hyperparameters.max_steps = steps
    spec.hyperparameters.batch_size = 2
    return spec


def _running(min_step: int):  # type: ignore[no-untyped-def]
    return lambda job: (
        job.status == common_pb2.JOB_STATUS_RUNNING and (job.progress.step >= min_step)
    )


async def test_cancel_running_job_registers_nothing(harness: Harness) -> None:
    await harness.start_worker()
    await harness.dataset("dv", "sft", sft_rows(32))
    reply = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=_long("dv", 5000, 1000))
    )
    await harness.wait_for(reply.job.id, _running(1))
    await harness.stub.CancelTrainingJob(
        trainer_pb2.CancelTrainingJobRequest(job_id=reply.job.id, reason="changed my mind")
    )
    job = await harness.wait_for(reply.job.id, finished)
    assert job.status == common_pb2.JOB_STATUS_CANCELLED
    assert not job.model_version_id
    (cancelled,) = await harness.facts(subjects.TRAINER_JOB_CANCELLED, expect=1)
    assert cancelled.reason == "cancelled while running"
    assert await harness.facts(subjects.TRAINER_JOB_SUCCEEDED, timeout_s=0.5) == []


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The service runs under the most permissive umask: its files must not depend on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _open_to_others(root: Path) -> dict[str, str]:
    """Paths under (and including) ``root`` that group or others may read or enter."""
    return {
        str(p.relative_to(root)): oct(p.lstat().st_mode & 0o777)
        for p in [root, *root.rglob("*")]
        if p.lstat().st_mode & 0o077
    }


@pytest.mark.usefixtures("open_umask")
async def test_pause_checkpoints_and_resume_continues_from_it(harness: Harness) -> None:
    await harness.start_worker()
    await harness.dataset("dv", "sft", sft_rows(32))
    reply = await harness.stub.SubmitTrainingJob(
        trainer_pb2.SubmitTrainingJobRequest(spec=_long("dv", 160, 1000))
    )
    job_id = reply.job.id
    await harness.wait_for(job_id, _running(1))
    await harness.stub.PauseTrainingJob(trainer_pb2.PauseTrainingJobRequest(job_id=job_id))
    paused = await harness.wait_for(job_id, lambda j: j.status == common_pb2.JOB_STATUS_PAUSED)
    step = paused.latest_checkpoint.step
    assert 0 < step < 160  # the pause itself checkpointed (the interval is 1000)
    # what the runner (datasets, plan, log) and the training child (the checkpoint, written
    # by transformers) left in the work folder, and the stored artifacts: owner-only
    work = harness.data_dir / "trainer" / "work" / job_id
    assert (work / f"checkpoints/checkpoint-{step}").is_dir() and (work / "data").is_dir()
    assert _open_to_others(work) == {}
    assert _open_to_others(harness.data_dir / "artifacts") == {}

    await harness.stub.ResumeTrainingJob(trainer_pb2.ResumeTrainingJobRequest(job_id=job_id))
    job = await harness.wait_for(job_id, finished)
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.error
    assert job.attempt == 2
    started = await harness.facts(subjects.TRAINER_JOB_STARTED, expect=2)
    assert [s.resumed_from_step for s in started] == [0, step]
    assert len(await harness.facts(subjects.TRAINER_JOB_PAUSED, expect=1)) == 1
    assert len(await harness.facts(subjects.TRAINER_JOB_SUCCEEDED, expect=1)) == 1


async def test_worker_killed_mid_job_is_resumed_from_its_checkpoint(
    harness: Harness, nats_url: str
) -> None:
    await harness.dataset("dv", "sft", sft_rows(32))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TW_NATS__URL": nats_url,
        "TW_GRPC__PORT": "0",
        "TW_DATA_DIR": str(harness.data_dir),
        "TW_TRAINER__PROGRESS_INTERVAL_S": "0.2",
        "TW_TRAINER__HEARTBEAT_S": "0.3",
    }
    doomed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunewright.trainer.server",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # another system asks for the job by event (the same path Submit takes)
        bus = await harness.client()
        request = events_pb2.TrainerJobRequested(
            meta=event_meta(producer="test"), job_id="job-kill", spec=_long("dv", 150, 10)
        )
        await bus.publish(subjects.TRAINER_JOB_REQUESTED, request, key="job-kill")
        (checkpointed,) = await harness.facts(
            subjects.TRAINER_JOB_CHECKPOINTED, expect=1, timeout_s=60
        )
        assert checkpointed.job_id == "job-kill"
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()

    await harness.start_worker()  # a fresh worker on the same host notices the dead one
    job = await harness.wait_for("job-kill", finished)
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.error
    started = await harness.facts(subjects.TRAINER_JOB_STARTED, expect=2)
    assert [s.attempt for s in started] == [1, 2]
    assert started[1].resumed_from_step >= checkpointed.checkpoint.step > 0
    assert len(await harness.facts(subjects.TRAINER_JOB_SUCCEEDED, expect=1)) == 1


async def test_two_workers_run_each_job_exactly_once(harness: Harness) -> None:
    await harness.start_worker()
    await harness.start_worker()
    await harness.dataset("dv", "sft", sft_rows(16))
    spec = sft_spec("dv", checkpoint_every_steps=100)
    spec.hyperparameters.max_steps = 2
    ids = []
    for i in range(JOBS):
        reply = await harness.stub.SubmitTrainingJob(
            trainer_pb2.SubmitTrainingJobRequest(spec=spec, request_id=f"batch-{i}")
        )
        ids.append(reply.job.id)
    jobs = [await harness.wait_for(job_id, finished, timeout_s=240) for job_id in ids]
    assert all(j.status == common_pb2.JOB_STATUS_SUCCEEDED for j in jobs)
    started = await harness.facts(subjects.TRAINER_JOB_STARTED, expect=JOBS)
    succeeded = await harness.facts(subjects.TRAINER_JOB_SUCCEEDED, expect=JOBS)
    assert collections.Counter(s.job_id for s in started) == {i: 1 for i in ids}
    assert collections.Counter(s.job_id for s in succeeded) == {i: 1 for i in ids}
    assert len({j.worker_id for j in jobs}) == 2  # both workers took work


JOBS = 10


async def test_a_job_id_that_could_escape_the_work_folder_deletes_nothing(
    harness: Harness,
) -> None:
    # the work folder is <data_dir>/trainer/work/<job_id>, removed when the job ends
    await harness.start_worker()
    await harness.dataset("dv", "sft", sft_rows(4))
    kept = list((harness.data_dir / "artifacts").rglob("*"))
    assert kept
    bus = await harness.client()
    dlq = await bus.js.subscribe(
        subjects.dead_letter_subject(subjects.TRAINER_JOB_REQUESTED), ordered_consumer=True
    )
    request = events_pb2.TrainerJobRequested(
        meta=event_meta(producer="test"), job_id="../../artifacts", spec=sft_spec("dv")
    )
    await bus.publish(subjects.TRAINER_JOB_REQUESTED, request, key="escape")
    msg = await dlq.next_msg(timeout=30)
    assert "INVALID_JOB_ID" in msg.headers[subjects.HEADER_DLQ_REASON]
    await dlq.unsubscribe()
    assert all(p.exists() for p in kept)
