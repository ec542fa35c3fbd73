"""Monitoring closes the loop (the monitoring issue's acceptance test): production traffic is
logged through the monitor's gRPC API, scrubbed by the real ingest service window by window,
and tested for drift against the model's training data. Two windows from the training
distribution raise nothing; a window where half the traffic is about a new product
(AcmeVoice) and new question types is flagged, with evidence, and the policy starts the
retraining pipeline, which the registry runs with the detection as its trigger.

Real parts: nats-server, registry (SQLite), ingest (presidio + spaCy), monitor, the drift
detector plugins. Not started: synth, trainer and evaluator, so the retraining run stops at
its candidates stage (a request nobody consumes here); the stages after it are the demo
pipeline's, tested there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef
from tunewright.core.bus import decode_event, event_meta
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.core.splits import read_split_rows
from tunewright.events.v1 import events_pb2
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tunewright.monitor.server import DEFINITION as MONITOR
from tunewright.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 60


def _trafficgen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "trafficgen", ROOT / "bench" / "monitor" / "trafficgen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["trafficgen"] = module
    spec.loader.exec_module(module)
    return module


def _pb(item: dict[str, Any], model_version_id: str) -> monitor_pb2.Interaction:
    return monitor_pb2.Interaction(
        interaction_id=item["interaction_id"],
        model_version_id=model_version_id,
        prompt=item["prompt"],
        response=item["response"],
        attributes=item["attributes"],
        feedback=monitor_pb2.Feedback(
            thumbs=item["feedback"]["thumbs"],
            escalated=item["feedback"]["escalated"],
            resolved=item["feedback"]["resolved"],
        ),
    )


async def _until(check: Any, timeout_s: float = 90, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_shifted_traffic_is_flagged_and_starts_a_linked_retraining_run(
    nats_url: str, tmp_path: Path, upload: Any
) -> None:
    tg = _trafficgen()
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": tmp_path / "data"}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    services = [registry]
    try:
        # uploads go as soon as no job reads them (the default waits 10 minutes)
        ingest_settings = load_settings(
            INGEST.settings_cls, **common, ingest={"delete_sources_after_s": 0}
        )
        ingest = await start_service(INGEST, ingest_settings)
        services.append(ingest)
        monitor_settings = load_settings(
            MONITOR.settings_cls,
            **common,
            monitor={
                "registry_address": f"127.0.0.1:{registry.port}",
                "window": {"size": WINDOW, "max_wait_s": 60, "min_size": 20},
                "policy": {"action": "retrain", "feedback_backend": "simulated"},
            },
        )
        monitor = await start_service(MONITOR, monitor_settings)
        services.append(monitor)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch,
            grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as ich,
            grpc.aio.insecure_channel(f"127.0.0.1:{monitor.port}") as mch,
        ):
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            istub = ingest_pb2_grpc.IngestServiceStub(ich)
            mstub = monitor_pb2_grpc.MonitorServiceStub(mch)

            # the production model's training data: tickets curated by ingest (scrubbed the
            # same way traffic will be)
            training = [
                {
                    "messages": [
                        {"role": "user", "content": i["prompt"]},
                        {"role": "assistant", "content": i["response"]},
                    ],
                    "category": i["attributes"]["category"],
                }
                for i in tg.TrafficGenerator(seed=1).interactions(150)
            ]
            training_data = "".join(json.dumps(r) + "\n" for r in training).encode()
            source = await upload(ingest.port, training_data)
            job = (
                await istub.SubmitIngestJob(
                    ingest_pb2.SubmitIngestJobRequest(
                        spec=ingest_pb2.IngestSpec(
                            dataset="tickets", source=source, split={"eval_fraction": 0.1}
                        )
                    )
                )
            ).job

            async def curated() -> str:
                got = (await istub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=job.id))).job
                assert got.status != common_pb2.JOB_STATUS_FAILED, got.error
                return (
                    got.dataset_version_id if got.status == common_pb2.JOB_STATUS_SUCCEEDED else ""
                )

            dataset_id = await _until(curated, what="the training set")
            training_job = job

            async def recorded() -> bool:  # the registry has taken in the curated fact
                try:
                    await rstub.GetDatasetVersion(
                        registry_pb2.GetDatasetVersionRequest(
                            ref=common_pb2.DatasetVersionRef(id=dataset_id)
                        )
                    )
                except grpc.aio.AioRpcError:
                    return False
                return True

            await _until(recorded, what="the registry to record the training set")
            model = (
                await rstub.RegisterModelVersion(
                    registry_pb2.RegisterModelVersionRequest(
                        model_version=registry_pb2.ModelVersion(
                            model="support-assistant",
                            base_model="tiny:llama-xxs",
                            method="sft",
                            dataset_version_ids=[dataset_id],
                        )
                    )
                )
            ).model_version

            async def report() -> list[monitor_pb2.TrafficWindow]:
                reply = await mstub.GetDriftReport(
                    monitor_pb2.GetDriftReportRequest(model_version_id=model.id)
                )
                return list(reply.windows)

            windows = [
                tg.TrafficGenerator(seed=2).interactions(WINDOW, start=0),
                tg.TrafficGenerator(seed=3).interactions(WINDOW, start=WINDOW),
                tg.TrafficGenerator(seed=4, shift=0.5).interactions(WINDOW, start=2 * WINDOW),
            ]
            emails = []
            for n, interactions in enumerate(windows, 1):
                items = list(interactions)
                emails += [i["prompt"].split("reach me at ")[1].split()[0] for i in items]
                await mstub.LogInteractions(
                    monitor_pb2.LogInteractionsRequest(
                        interactions=[_pb(i, model.id) for i in items]
                    )
                )

                async def analysed(n: int = n) -> bool:
                    done = [w for w in await report() if w.status != "pending"]
                    return len(done) == n

                await _until(analysed, what=f"window {n} to be analysed")

            first, second, shifted = await report()
            assert [w.status for w in (first, second, shifted)] == [
                "baseline",
                "analysed",
                "analysed",
            ]
            # same distribution: every detector ran and none fired
            assert {r.detector for r in first.results} == {"input-embedding", "topic-mix"}
            assert {r.detector for r in second.results} == {
                "input-embedding",
                "topic-mix",
                "output",
                "outcome",
            }
            assert not any(r.drifted for w in (first, second) for r in w.results)
            assert not first.detection_id and not second.detection_id

            # the shift: flagged, with evidence
            flagged = {r.detector: r for r in shifted.results if r.drifted}
            assert {"input-embedding", "topic-mix"} <= set(flagged)
            topic = flagged["topic-mix"]
            assert set(topic.evidence["new_categories"]) <= {
                "call_quality",
                "voice_assistant",
                "data_residency",
            }
            assert len(topic.evidence["new_categories"]) >= 2
            # the new product's name is not in the training vocabulary: counted, never named
            # (a word only traffic has may be something the scrubber missed)
            words = flagged["input-embedding"].evidence
            assert "acmevoice" not in [t["term"] for t in words["terms_grown"]]
            assert words["unseen_terms_grown"] >= 1
            assert all(r.p_value < r.alpha for r in flagged.values())

            detections = (
                await mstub.ListDetections(
                    monitor_pb2.ListDetectionsRequest(model_version_id=model.id)
                )
            ).detections
            assert [d.id for d in detections] == [shifted.detection_id]
            detection = detections[0]
            assert detection.action == "retrain" and detection.pipeline_run_id

            # the fact other systems see
            bus = monitor.context.bus
            raw = await bus.js.get_last_msg("TW_FACTS", subjects.MONITOR_DRIFT_DETECTED)
            event = decode_event(raw.headers[subjects.HEADER_EVENT_TYPE], raw.data)
            assert event.detection_id == detection.id
            assert event.pipeline_run_id == detection.pipeline_run_id
            assert event.dataset_version_id == shifted.dataset_version_id
            assert {r.detector for r in event.results if r.drifted} == set(flagged)

            # the retraining run, linked to the detection in the registry
            async def started() -> registry_pb2.PipelineRun | None:
                try:
                    reply = await rstub.GetPipelineRun(
                        registry_pb2.GetPipelineRunRequest(run_id=detection.pipeline_run_id)
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        return None  # the registry has not consumed the request yet
                    raise
                run = reply.run
                return run if run.stages[0].status == common_pb2.JOB_STATUS_SUCCEEDED else None

            try:
                run = await _until(started, what="the retraining run's first stage")
            except grpc.aio.AioRpcError as exc:
                raise AssertionError(
                    f"retraining run not in the registry: {exc.details()}"
                ) from None
            assert run.trigger_event_id == detection.id
            assert run.requested_by == f"monitor:{detection.id}"
            assert run.status == common_pb2.JOB_STATUS_RUNNING
            assert [s.kind for s in run.stages] == [
                "ingest",
                "candidates",
                "feedback",
                "train",
                "evaluate",
                "approve",
                "promote",
            ]
            assert run.stages[1].status == common_pb2.JOB_STATUS_RUNNING  # candidates requested
            assert run.parameters["production_model"] == model.id
            assert run.parameters["feedback_backend"] == "simulated"

            # only scrubbed text was kept: no planted email survives in a window's dataset,
            # the raw uploads are gone, and no raw message is left in the traffic stream
            store = monitor.context.artifacts
            for window in (first, second, shifted):
                version = (
                    await rstub.GetDatasetVersion(
                        registry_pb2.GetDatasetVersionRequest(
                            ref=common_pb2.DatasetVersionRef(id=window.dataset_version_id)
                        )
                    )
                ).dataset_version
                assert version.labels["source"] == "traffic"
                assert version.source == registry_pb2.DATASET_SOURCE_TRAFFIC
                job = (
                    await istub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=window.id))
                ).job
                upload_ref = ArtifactRef.from_uri(job.spec.source.uri)

                async def upload_deleted(ref: ArtifactRef = upload_ref) -> bool:
                    return not await store.exists(ref)

                await _until(upload_deleted, what="the raw window upload to be deleted")
                for ref in version.splits.values():
                    data = await store.get_bytes(ArtifactRef.from_uri(ref.uri))
                    text = json.dumps(read_split_rows(data, ref.media_type))
                    assert not [e for e in emails if e in text]
            info = await bus.js.stream_info("TW_TRAFFIC")
            assert info.state.messages == 0

            # a request for a finished job delivered again with its upload put back (uploads
            # are content-addressed): ingest acks it and deletes the upload once more
            training_ref = ArtifactRef.from_uri(source.uri)

            async def training_upload_deleted() -> bool:
                return not await store.exists(training_ref)

            await _until(training_upload_deleted, what="the training upload to be deleted")
            assert (await upload(ingest.port, training_data)).uri == source.uri
            await bus.publish(
                subjects.INGEST_DATASET_REQUESTED,
                events_pb2.IngestDatasetRequested(
                    meta=event_meta(producer="e2e", workspace="default"),
                    job_id=training_job.id,
                    spec=training_job.spec,
                ),
                key=f"{training_job.id}/again",
            )
            await _until(training_upload_deleted, what="ingest to delete a finished job's upload")
    finally:
        for running in reversed(services):
            await running.stop()
