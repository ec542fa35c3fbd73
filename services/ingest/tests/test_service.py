"""The ingest service end to end: real nats-server, real gRPC on port 0, real presidio.

Upload + curate over gRPC (client streaming), the curated event with its dataset version, job
state, the event stream, the curation report, idempotent submits, imports, bad specs, and a
request published straight to NATS by another system.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef
from tunewright.core.bus import EventBus, decode_event
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.ingest.jobs import TERMINAL
from tunewright.ingest.pii import PiiEngine
from tunewright.ingest.server import DEFINITION
from tunewright.ingest.settings import IngestSettings
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc


@pytest.fixture
async def service(
    nats_url: str, tmp_path: Path, pii_engine: PiiEngine
) -> AsyncIterator[RunningService[IngestSettings]]:
    # pii_engine: the worker reuses the session's loaded engine instead of loading its own
    settings = load_settings(
        IngestSettings,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path / "data",
        ingest={
            "import_roots": [str(tmp_path / "imports")],
            "progress_every": 100,
            "delete_sources_after_s": 0,
        },
    )
    running = await start_service(DEFINITION, settings)
    try:
        yield running
    finally:
        await running.stop()


async def _next_fact(bus: EventBus, subject: str, wait_s: float = 90) -> Any:
    sub = await bus.js.subscribe(subject, ordered_consumer=True)
    try:
        msg = await sub.next_msg(timeout=wait_s)
        return decode_event(msg.headers[subjects.HEADER_EVENT_TYPE], msg.data)
    finally:
        await sub.unsubscribe()


def _spec(dataset: str = "tickets") -> ingest_pb2.IngestSpec:
    return ingest_pb2.IngestSpec(
        dataset=dataset,
        split=ingest_pb2.SplitSpec(eval_fraction=0.2, seed=1, stratify_by="category"),
        terminology={"Acme CRM Pro": "AcmeCRM", "Acme CRM": "AcmeCRM"},
    )


async def _create(stub: Any, data: bytes, request_id: str) -> ingest_pb2.CreateDatasetResponse:
    async def requests() -> AsyncIterator[ingest_pb2.CreateDatasetRequest]:
        yield ingest_pb2.CreateDatasetRequest(
            header=ingest_pb2.CreateDatasetHeader(
                spec=_spec(),
                upload=ingest_pb2.UploadHeader(filename="tickets.jsonl", size_bytes=len(data)),
                request_id=request_id,
            )
        )
        for i in range(0, len(data), 64 * 1024):
            yield ingest_pb2.CreateDatasetRequest(chunk=data[i : i + 64 * 1024])

    return await stub.CreateDataset(requests())  # type: ignore[no-any-return]


async def test_create_dataset_curates_and_publishes_a_dataset_version(
    service: RunningService[IngestSettings], nats_url: str, ticketgen: Any, tmp_path: Path
) -> None:
    source = ticketgen.write_tickets(tmp_path / "src", 300, seed=2)
    truth = [json.loads(x) for x in source.with_suffix(".truth.jsonl").read_text().splitlines()]
    client = await EventBus.connect(nats_url, name="test-client")
    try:
        curated = asyncio.create_task(_next_fact(client, subjects.INGEST_DATASET_CURATED))
        await asyncio.sleep(0.1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            created = await _create(stub, source.read_bytes(), request_id="upload-1")
            job_id = created.job.id
            assert created.job.status == common_pb2.JOB_STATUS_QUEUED
            event: events_pb2.IngestDatasetCurated = await curated

            # the fact carries the dataset version: id from the content hash, splits as refs
            version = event.dataset_version
            assert event.job_id == job_id and version.produced_by == job_id
            assert version.id.startswith("dsv-") and len(version.content_hash) == 64
            assert version.kind == common_pb2.DATASET_KIND_SFT
            c = event.counts
            assert c.total_rows == 300
            assert c.accepted + c.quarantined + c.duplicates + c.filtered == c.total_rows
            assert c.train_rows + c.eval_rows == c.accepted == version.counts.accepted
            assert c.pii_entities["PERSON"] > 0 and c.quarantined_by_reason
            store = service.context.artifacts
            train = await store.get_bytes(ArtifactRef.from_uri(version.splits["train"].uri))
            assert train.startswith(b"PAR1")
            # the raw upload goes once the job is over: only the quarantine keeps raw rows
            upload = ArtifactRef.from_uri(created.artifact.uri)
            for _ in range(50):
                if not await store.exists(upload):
                    break
                await asyncio.sleep(0.1)
            assert not await store.exists(upload)
            for item in (t for t in truth for t in t["pii"]):
                assert item["value"].encode() not in event.SerializeToString()

            job = (await stub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=job_id))).job
            assert job.status == common_pb2.JOB_STATUS_SUCCEEDED
            assert job.dataset_version_id == version.id
            statuses = [h.status for h in job.history]
            assert statuses[-2:] == [common_pb2.JOB_STATUS_RUNNING, common_pb2.JOB_STATUS_SUCCEEDED]

            events = [
                r.event
                async for r in stub.StreamIngestJobEvents(
                    ingest_pb2.StreamIngestJobEventsRequest(job_id=job_id)
                )
            ]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert any(e.kind == common_pb2.EVENT_KIND_METRICS for e in events)
            resumed = [
                r.event.sequence
                async for r in stub.StreamIngestJobEvents(
                    ingest_pb2.StreamIngestJobEventsRequest(job_id=job_id, after_sequence=2)
                )
            ]
            assert resumed == [e.sequence for e in events[2:]]

            report = await stub.GetCurationReport(
                ingest_pb2.GetCurationReportRequest(job_id=job_id)
            )
            assert report.counts == c
            body = json.loads(await store.get_bytes(ArtifactRef.from_uri(report.report.uri)))
            assert body["counts_add_up"] is True and body["artifacts"]["row_log.jsonl"]
            audit = await store.get_bytes(ArtifactRef.from_uri(report.pii_audit.uri))
            assert b"spans_by_entity" in audit
            assert not any(t["pii"] and t["pii"][0]["value"].encode() in audit for t in truth)

            # the same request id is the same job, not a second one
            again = await _create(stub, source.read_bytes(), request_id="upload-1")
            assert again.job.id == job_id
            assert not await store.exists(upload)  # the repeated upload was not kept either
            listed = await stub.ListIngestJobs(ingest_pb2.ListIngestJobsRequest())
            assert [j.id for j in listed.jobs] == [job_id]
    finally:
        await client.close()


async def test_bad_requests_get_clear_status_codes(
    service: RunningService[IngestSettings], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"prompt": "a", "completion": "b"}\n')
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        spec = _spec()
        spec.filters.add(name="no-such-filter")
        spec.split.eval_fraction = 1.5
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.ImportDataset(
                ingest_pb2.ImportDatasetRequest(spec=spec, source_uri=outside.as_uri())
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no-such-filter" in (bad.value.details() or "")
        assert "eval_fraction" in (bad.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ImportDataset(
                ingest_pb2.ImportDatasetRequest(spec=_spec(), source_uri=outside.as_uri())
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id="ing-nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        imports = tmp_path / "imports"
        imports.mkdir()
        inside = imports / "pairs.jsonl"
        inside.write_text(outside.read_text())
        imported = await stub.ImportDataset(
            ingest_pb2.ImportDatasetRequest(spec=_spec(), source_uri=inside.as_uri())
        )
        assert imported.artifact.uri.startswith("tw-artifact:sha256:")
        assert imported.job.spec.source.uri == imported.artifact.uri


async def test_a_request_from_another_system_is_rejected_with_a_reason(
    service: RunningService[IngestSettings], nats_url: str
) -> None:
    client = await EventBus.connect(nats_url, name="other-system")
    try:
        rejected = asyncio.create_task(_next_fact(client, subjects.INGEST_DATASET_REJECTED))
        await asyncio.sleep(0.1)
        spec = _spec()
        spec.source.uri = "tw-artifact:sha256:" + "0" * 64  # never uploaded
        await client.publish(
            subjects.INGEST_DATASET_REQUESTED,
            events_pb2.IngestDatasetRequested(
                meta=common_pb2.EventMeta(event_id="ext-1"), job_id="ext-job-1", spec=spec
            ),
            key="ext-job-1",
        )
        event: events_pb2.IngestDatasetRejected = await rejected
        assert event.job_id == "ext-job-1"
        assert event.error.reason == "ARTIFACT_NOT_FOUND"
    finally:
        await client.close()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        job = (await stub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id="ext-job-1"))).job
        assert job.status == common_pb2.JOB_STATUS_FAILED
        assert job.error.reason == "ARTIFACT_NOT_FOUND"


async def test_a_job_id_that_could_escape_its_folders_is_dead_lettered(
    service: RunningService[IngestSettings], nats_url: str
) -> None:
    client = await EventBus.connect(nats_url, name="other-system")
    try:
        sub = await client.js.subscribe(
            subjects.dead_letter_subject(subjects.INGEST_DATASET_REQUESTED), ordered_consumer=True
        )
        await client.publish(
            subjects.INGEST_DATASET_REQUESTED,
            events_pb2.IngestDatasetRequested(
                meta=common_pb2.EventMeta(event_id="ext-2"), job_id="../../etc", spec=_spec()
            ),
            key="ext-2",
        )
        msg = await sub.next_msg(timeout=10)
        assert (
            "INVALID_JOB_ID" in msg.headers[subjects.HEADER_DLQ_REASON]
            or "job_id" in msg.headers[subjects.HEADER_DLQ_REASON]
        )
        await sub.unsubscribe()
    finally:
        await client.close()


async def _ended(stub: Any, job_id: str, wait_s: float = 120) -> ingest_pb2.IngestJob:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        job = (await stub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=job_id))).job
        if job.status in TERMINAL:
            return job  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} did not end"
        await asyncio.sleep(0.2)


async def test_only_uploads_ingest_put_into_the_store_are_deleted(
    service: RunningService[IngestSettings], nats_url: str, ticketgen: Any, tmp_path: Path
) -> None:
    source = ticketgen.write_tickets(tmp_path / "src", 60, seed=3)
    store = service.context.artifacts
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        created = await _create(stub, source.read_bytes(), request_id="own-upload")
        first = await _ended(stub, created.job.id)
        assert first.status == common_pb2.JOB_STATUS_SUCCEEDED, first.error
        upload = ArtifactRef.from_uri(created.artifact.uri)
        for _ in range(50):  # ingest's own upload, finished with: deleted
            if not await store.exists(upload):
                break
            await asyncio.sleep(0.1)
        assert not await store.exists(upload)
        report = await stub.GetCurationReport(ingest_pb2.GetCurationReportRequest(job_id=first.id))
        artifacts = json.loads(await store.get_bytes(ArtifactRef.from_uri(report.report.uri)))
        train = ArtifactRef.from_uri(artifacts["artifacts"]["train.parquet"])
        evals = ArtifactRef.from_uri(artifacts["artifacts"]["eval.parquet"])

        # re-ingesting a registered split by reference: the split is not ingest's to delete
        again = await stub.ImportDataset(
            ingest_pb2.ImportDatasetRequest(
                spec=_spec("tickets-again"), source_uri=train.uri, request_id="re-ingest"
            )
        )
        assert (await _ended(stub, again.job.id)).status in TERMINAL
        assert await store.exists(train)
        await store.get_bytes(train)  # intact

        # an upload of bytes the store already had (someone downloaded the eval split): kept
        data = await store.get_bytes(evals)
        same = await _create(stub, data, request_id="same-bytes")
        assert same.artifact.uri == evals.uri
        await _ended(stub, same.job.id)
        assert await store.exists(evals)

        # a source another service put and named in a request over NATS: kept
        theirs = await store.put_bytes(source.read_bytes()[:4000], "application/jsonl")
        client = await EventBus.connect(nats_url, name="other-service")
        try:
            spec = _spec("tickets-from-elsewhere")
            spec.source.uri, spec.source.sha256 = theirs.uri, theirs.sha256
            await client.publish(
                subjects.INGEST_DATASET_REQUESTED,
                events_pb2.IngestDatasetRequested(
                    meta=common_pb2.EventMeta(event_id="ext-3"), job_id="ext-job-3", spec=spec
                ),
                key="ext-job-3",
            )
        finally:
            await client.close()
        await _ended(stub, "ext-job-3")
        assert await store.exists(theirs)
