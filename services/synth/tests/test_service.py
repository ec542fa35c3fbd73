"""The synth gRPC API over real gRPC (port 0), real NATS and the real SQLite job store:
validation, idempotent submit, get, list with paging, cancel, event streams, and a job that
fails with its reason (published as tw.synth.job.failed)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import decode_event
from tunewright.core.errors import FailedPrecondition
from tunewright.core.service import start_service
from tunewright.core.settings import NatsSettings, load_settings
from tunewright.synth.server import DEFINITION
from tunewright.synth.synthetic import SyntheticExamples
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc

from . import people

#: the same service without its consumer: submitted jobs stay queued
GRPC_ONLY = dataclasses.replace(DEFINITION, consumers=lambda _ctx: ())


def _settings(nats_url: str, tmp_path: Path) -> Any:
    return load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path / "data",
        synth={"registry_address": "127.0.0.1:1"},  # nothing listens: jobs that need it fail
    )


def _spec(**task: Any) -> synth_pb2.SynthJobSpec:
    return synth_pb2.SynthJobSpec(
        synthetic_examples=synth_pb2.SyntheticExamplesTask(
            seed_dataset=common_pb2.DatasetVersionRef(id="dsv-seed"),
            generator=common_pb2.PluginRef(name="local"),
            model=common_pb2.ModelVersionRef(id="mv-1"),
            num_examples=task.pop("num_examples", 5),
            **task,
        )
    )


async def test_submit_get_list_cancel_and_stream(nats_url: str, tmp_path: Path) -> None:
    settings = _settings(nats_url, tmp_path)
    service = await start_service(GRPC_ONLY, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = synth_pb2_grpc.SynthServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SubmitSynthJob(
                    synth_pb2.SubmitSynthJobRequest(spec=_spec(num_examples=0, human_review=True))
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SubmitSynthJob(synth_pb2.SubmitSynthJobRequest())
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id="syn-nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

            jobs = [
                (
                    await stub.SubmitSynthJob(
                        synth_pb2.SubmitSynthJobRequest(spec=_spec(), request_id=f"r{i}")
                    )
                ).job
                for i in range(3)
            ]
            assert all(j.status == common_pb2.JOB_STATUS_QUEUED for j in jobs)
            assert all(j.workspace == "default" for j in jobs)
            page = await stub.ListSynthJobs(
                synth_pb2.ListSynthJobsRequest(page=common_pb2.PageRequest(page_size=2))
            )
            rest = await stub.ListSynthJobs(
                synth_pb2.ListSynthJobsRequest(
                    page=common_pb2.PageRequest(page_size=2, page_token=page.page.next_page_token)
                )
            )
            assert [j.id for j in [*page.jobs, *rest.jobs]] == [j.id for j in jobs]
            assert rest.page.next_page_token == ""

            cancelled = (
                await stub.CancelSynthJob(
                    synth_pb2.CancelSynthJobRequest(job_id=jobs[0].id, reason="changed my mind")
                )
            ).job
            assert cancelled.status == common_pb2.JOB_STATUS_CANCELLED
            assert cancelled.history[-1].reason == "changed my mind"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CancelSynthJob(synth_pb2.CancelSynthJobRequest(job_id=jobs[0].id))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            events = [
                r.event
                async for r in stub.StreamSynthJobEvents(
                    synth_pb2.StreamSynthJobEventsRequest(job_id=jobs[0].id)
                )
            ]
            assert [e.status for e in events] == [common_pb2.JOB_STATUS_CANCELLED]
            only_queued = await stub.ListSynthJobs(
                synth_pb2.ListSynthJobsRequest(statuses=[common_pb2.JOB_STATUS_QUEUED])
            )
            assert [j.id for j in only_queued.jobs] == [j.id for j in jobs[1:]]
    finally:
        await service.stop()

    # the worker starts: the cancelled job is acked unrun, the others fail (no registry)
    service = await start_service(DEFINITION, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = synth_pb2_grpc.SynthServiceStub(channel)
            streamed = [
                r.event
                async for r in stub.StreamSynthJobEvents(
                    synth_pb2.StreamSynthJobEventsRequest(job_id=jobs[2].id)
                )
            ]
            assert [e.status for e in streamed if e.kind == common_pb2.EVENT_KIND_STATUS] == [
                common_pb2.JOB_STATUS_RUNNING,
                common_pb2.JOB_STATUS_FAILED,
            ]
            for _ in range(50):
                states = [
                    (await stub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=j.id))).job
                    for j in jobs
                ]
                if all(s.status >= common_pb2.JOB_STATUS_SUCCEEDED for s in states):
                    break
                await asyncio.sleep(0.1)
            assert [s.status for s in states] == [
                common_pb2.JOB_STATUS_CANCELLED,
                common_pb2.JOB_STATUS_FAILED,
                common_pb2.JOB_STATUS_FAILED,
            ]
            assert states[1].error.reason == "REGISTRY_UNAVAILABLE"
            resumed = [
                r.event
                async for r in stub.StreamSynthJobEvents(
                    synth_pb2.StreamSynthJobEventsRequest(job_id=jobs[2].id, after_sequence=1)
                )
            ]
            assert [e.sequence for e in resumed] == [e.sequence for e in streamed[1:]]
        sub = await service.context.bus.js.subscribe(
            subjects.SYNTH_JOB_FAILED, ordered_consumer=True
        )
        failed = set()
        for _ in range(2):
            msg = await sub.next_msg(timeout=5)
            failed.add(decode_event(msg.headers["Tw-Event-Type"], msg.data).job_id)
        await sub.unsubscribe()
        assert failed == {jobs[1].id, jobs[2].id}
    finally:
        await service.stop()


async def _wait_status(stub: Any, job_id: str, wanted: set[int], timeout_s: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job = (await stub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=job_id))).job
        if job.status in wanted or asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(0.1)


async def test_a_collection_waiting_for_people_blocks_no_other_job_and_can_be_cancelled(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker runs several jobs at once (``synth.worker_concurrency``): a feedback
    collection that waits for people (the ``nobody`` stand-in backend, see people.py) does not
    hold up the next job, and a gRPC cancel stops the wait within seconds."""
    from tunewright.core.plugins import PluginManager

    class WithPeople(PluginManager):
        def load(self, **kwargs: Any) -> Any:
            return super().load(builtins=[people], **kwargs)

    monkeypatch.setattr("tunewright.core.service.PluginManager", WithPeople)
    service = await start_service(DEFINITION, _settings(nats_url, tmp_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = synth_pb2_grpc.SynthServiceStub(channel)
            waiting = synth_pb2.SynthJobSpec(
                feedback_collection=synth_pb2.FeedbackCollectionTask(
                    feedback_backend={"name": "nobody"},
                    feedback_dataset="prefs-nobody",
                    output_dataset="support-preferences",
                    min_records=1,
                    wait_timeout_seconds=3600,
                    poll_interval_seconds=600,
                )
            )
            slow = (await stub.SubmitSynthJob(synth_pb2.SubmitSynthJobRequest(spec=waiting))).job
            running = await _wait_status(stub, slow.id, {common_pb2.JOB_STATUS_RUNNING})
            assert running.status == common_pb2.JOB_STATUS_RUNNING
            quick = (await stub.SubmitSynthJob(synth_pb2.SubmitSynthJobRequest(spec=_spec()))).job
            done = await _wait_status(stub, quick.id, {common_pb2.JOB_STATUS_FAILED})
            assert done.error.reason == "REGISTRY_UNAVAILABLE"  # it ran beside the waiting one
            still = (await stub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=slow.id))).job
            assert still.status == common_pb2.JOB_STATUS_RUNNING

            started = asyncio.get_running_loop().time()
            await stub.CancelSynthJob(synth_pb2.CancelSynthJobRequest(job_id=slow.id))
            cancelled = await _wait_status(stub, slow.id, {common_pb2.JOB_STATUS_CANCELLED})
            assert cancelled.status == common_pb2.JOB_STATUS_CANCELLED
            assert asyncio.get_running_loop().time() - started < 5
    finally:
        await service.stop()


async def test_a_job_failing_during_a_nats_outage_is_announced_then_stored(
    nats_url: str, nats_blip: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NATS goes away (for real) as the job fails, for longer than one publish retries
    async def fail_in_an_outage(self: Any, *args: Any, **kwargs: Any) -> Any:
        nats_blip.begin(down_s=4.0)
        raise FailedPrecondition("seed dataset dsv-seed has no rows", reason="EMPTY_SEED")

    monkeypatch.setattr(SyntheticExamples, "run", fail_in_an_outage)
    settings = _settings(nats_url, tmp_path).model_copy(
        update={"nats": NatsSettings(url=nats_url, reconnect_time_wait_s=0.1)}
    )
    service = await start_service(DEFINITION, settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = synth_pb2_grpc.SynthServiceStub(channel)
            job = (await stub.SubmitSynthJob(synth_pb2.SubmitSynthJobRequest(spec=_spec()))).job
            for _ in range(100):
                if nats_blip.begun:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(3.0)
            # not stored as failed while its fact is not out (a redelivery would ack it)
            during = (await stub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=job.id))).job
            assert during.status == common_pb2.JOB_STATUS_RUNNING
            await nats_blip.over()
            ended = await _wait_status(stub, job.id, {common_pb2.JOB_STATUS_FAILED}, 60)
            assert ended.status == common_pb2.JOB_STATUS_FAILED
            assert ended.error.reason == "EMPTY_SEED"
        sub = await service.context.bus.js.subscribe(
            subjects.SYNTH_JOB_FAILED, ordered_consumer=True
        )
        msg = await sub.next_msg(timeout=10)
        await sub.unsubscribe()
        fact = decode_event(msg.headers["Tw-Event-Type"], msg.data)
        assert fact.job_id == job.id and fact.error.reason == "EMPTY_SEED"  # type: ignore[attr-defined]
    finally:
        await service.stop()
