"""The monitor service on a real NATS server and real gRPC: interactions logged over gRPC are
held (unacknowledged) until their window closes, then go to ingest as one JSONL upload with
only allow-listed columns; bad interactions are refused with field violations; a canary
evaluation is requested on schedule and a failed gate verdict becomes a detection. Ingest
and the evaluator are not running: their requests are read back from their work queues."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef
from tunewright.core.bus import decode_event, event_meta
from tunewright.core.errors import Unavailable
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.events.v1 import events_pb2
from tunewright.monitor import traffic
from tunewright.monitor.server import DEFINITION
from tunewright.monitor.v1 import monitor_pb2, monitor_pb2_grpc

CANARY = {
    "candidate": {"role": "production", "model": {"id": "${model}"}},
    "dataset": {"id": "dv-canary"},
    "metrics": [{"name": "token_f1"}],
}


async def _last(bus: Any, stream: str, subject: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            raw = await bus.js.get_last_msg(stream, subject)
            return decode_event(raw.headers[subjects.HEADER_EVENT_TYPE], raw.data)
        except Exception:  # not there yet
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing on {subject}")


async def test_windows_go_to_ingest_and_a_failed_canary_is_a_detection(
    nats_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path,
        monitor={
            "window": {"size": 50, "max_wait_s": 0.5},
            "canary": {"enabled": True, "interval_s": 0.3, "spec": CANARY},
        },
    )
    monitor = await start_service(DEFINITION, settings)
    bus = monitor.context.bus
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{monitor.port}") as channel:
            stub = monitor_pb2_grpc.MonitorServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.LogInteraction(
                    monitor_pb2.LogInteractionRequest(
                        interaction=monitor_pb2.Interaction(
                            interaction_id="x", feedback=monitor_pb2.Feedback(thumbs=3)
                        )
                    )
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            items = [
                monitor_pb2.Interaction(
                    interaction_id=f"i{i}",
                    model_version_id="mv-1",
                    prompt=f"question {i}",
                    response=f"answer {i}",
                    attributes={"category": "billing", "crm_note": "call Bob at 555-0100"},
                    feedback=monitor_pb2.Feedback(thumbs=-1, comment="Bob Smith is angry"),
                )
                for i in range(5)
            ]
            reply = await stub.LogInteractions(
                monitor_pb2.LogInteractionsRequest(interactions=items)
            )
            assert reply.accepted == 5

            # a partly full window closes on age and becomes one ingest job
            request = await _last(bus, "TW_INGEST_WORK", subjects.INGEST_DATASET_REQUESTED)
            assert request.spec.dataset == "traffic-mv-1"
            assert request.spec.labels["window_id"] == request.job_id
            data = await monitor.context.artifacts.get_bytes(
                ArtifactRef.from_uri(request.spec.source.uri)
            )
            rows = [json.loads(line) for line in data.decode().splitlines()]
            assert sorted(r["interaction_id"] for r in rows) == [f"i{i}" for i in range(5)]
            assert b"Bob" not in data and b"555-0100" not in data  # unscrubbed columns stay out
            assert rows[0]["category"] == "billing"
            await asyncio.sleep(0.3)  # the acks follow the close
            assert (await bus.js.stream_info("TW_TRAFFIC")).state.messages == 0

            # the watched model gets a canary evaluation; its failed gate is a detection
            canary = await _last(bus, "TW_EVALUATOR_WORK", subjects.EVALUATOR_RUN_REQUESTED)
            assert canary.spec.candidate.model.id == "mv-1"
            assert canary.spec.workspace == "default"
            await bus.publish(
                subjects.EVALUATOR_RUN_COMPLETED,
                events_pb2.EvaluatorRunCompleted(
                    meta=event_meta(producer="test-evaluator", workspace="default"),
                    run=evaluator_pb2.EvaluationRun(
                        id=canary.run_id,
                        workspace="default",
                        verdict=evaluator_pb2.GateVerdict(
                            passed=False, reasons=["token_f1 0.41 < 0.50 (min)"]
                        ),
                    ),
                ),
                key=canary.run_id,
            )
            detected = await _last(bus, "TW_FACTS", subjects.MONITOR_DRIFT_DETECTED)
            assert detected.detector == "canary" and detected.action == "alert"
            assert detected.model_version_id == "mv-1"
            assert "token_f1 0.41" in detected.summary
            listed = (
                await stub.ListDetections(
                    monitor_pb2.ListDetectionsRequest(model_version_id="mv-1")
                )
            ).detections
            assert [d.id for d in listed] == [detected.detection_id]
            assert listed[0].results[0].evidence["evaluation_id"] == canary.run_id
    finally:
        await monitor.stop()


async def test_invalid_traffic_is_dropped_and_a_window_is_uploaded_once(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path,
        monitor={"window": {"size": 3, "max_wait_s": 0.3}},
    )
    monitor = await start_service(DEFINITION, settings)
    bus, artifacts = monitor.context.bus, monitor.context.artifacts
    app = monitor.context.resources["monitor"]
    try:
        # incomplete events from another system: acked and counted, never dead-lettered (the
        # DLQ would keep their raw text for 30 days) and never logged
        meta = event_meta(producer="helpdesk", workspace="default")
        for i, event in enumerate(
            [
                events_pb2.TrafficInteractionLogged(
                    meta=meta, interaction_id="x1", prompt="call Bob at 555-0100"
                ),
                events_pb2.TrafficInteractionLogged(
                    meta=meta, model_version_id="mv-1", prompt="call Bob at 555-0100"
                ),
            ]
        ):
            await bus.publish(subjects.TRAFFIC_INTERACTION_LOGGED, event, key=f"bad-{i}")
        for _ in range(400):  # up to 20 s
            if sum(app.dropped.values()) >= 2:
                break
            await asyncio.sleep(0.05)
        assert app.dropped == {"MISSING_MODEL_VERSION_ID": 1, "MISSING_INTERACTION_ID": 1}
        await asyncio.sleep(0.3)  # the acks follow the handler
        assert (await bus.js.stream_info("TW_TRAFFIC")).state.messages == 0
        assert (await bus.js.stream_info("TW_DLQ")).state.messages == 0
        assert "invalid traffic event dropped" in caplog.text and "555-0100" not in caplog.text

        # a window delivered again after ingest finished it (and deleted the upload) is not
        # uploaded again: nobody would delete that copy
        items = [traffic.Interaction(f"r{i}", "mv-2", f"question {i}", "answer") for i in range(3)]
        await app.close_window("default", "mv-2", items)
        request = await _last(bus, "TW_INGEST_WORK", subjects.INGEST_DATASET_REQUESTED)
        upload = ArtifactRef.from_uri(request.spec.source.uri)
        assert await artifacts.exists(upload)
        app.store.finish_window(request.job_id, status="small")
        await artifacts.delete(upload)
        await app.close_window("default", "mv-2", items)
        assert not await artifacts.exists(upload)

        # a hand-over that fails leaves no upload and no window behind (the redelivered
        # messages start it again); the outage is injected, NATS itself stays up
        async def nats_down(*args: Any, **kwargs: Any) -> None:
            raise Unavailable("NATS unreachable (injected)")

        failing = [
            traffic.Interaction(f"f{i}", "mv-3", f"question {i}", "answer") for i in range(3)
        ]
        monkeypatch.setattr(bus, "publish", nats_down)
        with pytest.raises(Unavailable):
            await app.close_window("default", "mv-3", failing)
        monkeypatch.undo()
        data = traffic.window_jsonl(failing, app.settings.window.attributes)
        lost = ArtifactRef(hashlib.sha256(data).hexdigest(), len(data), "application/jsonl")
        assert not await artifacts.exists(lost)
        assert app.store.windows("mv-3") == []
    finally:
        await monitor.stop()


async def test_the_monitor_deletes_the_window_uploads_it_made_once_ingest_is_done(
    nats_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path,
        monitor={"window": {"size": 3, "max_wait_s": 0.3}},
    )
    monitor = await start_service(DEFINITION, settings)
    bus, artifacts = monitor.context.bus, monitor.context.artifacts
    app = monitor.context.resources["monitor"]
    meta = event_meta(producer="test-ingest", workspace="default")
    try:
        items = [traffic.Interaction(f"o{i}", "mv-4", f"question {i}", "answer") for i in range(3)]
        await app.close_window("default", "mv-4", items)
        request = await _last(bus, "TW_INGEST_WORK", subjects.INGEST_DATASET_REQUESTED)
        upload = ArtifactRef.from_uri(request.spec.source.uri)
        assert await artifacts.exists(upload)
        # ingest (played here) rejects the window: the monitor's own upload goes
        rejected = events_pb2.IngestDatasetRejected(meta=meta, job_id=request.job_id)
        rejected.error.reason = "NO_ACCEPTED_ROWS"
        await bus.publish(subjects.INGEST_DATASET_REJECTED, rejected, key=request.job_id)
        for _ in range(100):
            if not await artifacts.exists(upload):
                break
            await asyncio.sleep(0.1)
        assert not await artifacts.exists(upload)

        # the same bytes were in the store already (someone else's artifact): left alone
        other = [traffic.Interaction(f"p{i}", "mv-5", f"question {i}", "answer") for i in range(3)]
        theirs = await artifacts.put_bytes(
            traffic.window_jsonl(other, app.settings.window.attributes), "application/jsonl"
        )
        await app.close_window("default", "mv-5", other)
        request = await _last(bus, "TW_INGEST_WORK", subjects.INGEST_DATASET_REQUESTED)
        assert request.spec.source.uri == theirs.uri
        rejected = events_pb2.IngestDatasetRejected(meta=meta, job_id=request.job_id)
        await bus.publish(subjects.INGEST_DATASET_REJECTED, rejected, key=request.job_id)
        for _ in range(50):
            if app.store.window(request.job_id).status != "pending":
                break
            await asyncio.sleep(0.1)
        assert app.store.window(request.job_id).status == "failed"
        assert await artifacts.exists(theirs)
    finally:
        await monitor.stop()
