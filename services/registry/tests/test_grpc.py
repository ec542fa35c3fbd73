"""RegistryService over real gRPC (port 0) with a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from registry_builders import dataset_version, evaluation_run

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import Delivery
from tunewright.core.interceptors import error_details
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

_PUMPS: set[asyncio.Task[None]] = set()  # keeps the watcher tasks referenced


@pytest.fixture
async def registry(nats_url: str, db_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:  # type: ignore[type-arg]
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path,
        registry={"database_url": db_url, "outbox_poll_s": 0.1},
    )
    running = await start_service(DEFINITION, settings)
    yield running
    await running.stop()


@pytest.fixture
async def stub(registry: RunningService) -> AsyncIterator[registry_pb2_grpc.RegistryServiceStub]:  # type: ignore[type-arg]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as channel:
        yield registry_pb2_grpc.RegistryServiceStub(channel)


async def _watch(running: RunningService, subject: str) -> asyncio.Queue[bytes]:  # type: ignore[type-arg]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    sub = await running.context.bus.js.subscribe(subject, ordered_consumer=True)

    async def pump() -> None:
        async for msg in sub.messages:
            await queue.put(msg.data)

    _PUMPS.add(asyncio.create_task(pump()))
    return queue


async def test_register_get_list_lineage_and_promotion_over_grpc(
    registry: RunningService,
    stub: registry_pb2_grpc.RegistryServiceStub,  # type: ignore[type-arg]
) -> None:
    registered = await _watch(registry, subjects.REGISTRY_MODEL_REGISTERED)
    promoted = await _watch(registry, subjects.REGISTRY_MODEL_PROMOTED)

    dv = await stub.RegisterDatasetVersion(
        registry_pb2.RegisterDatasetVersionRequest(dataset_version=dataset_version("dv-1"))
    )
    assert dv.created and dv.dataset_version.version == 1
    again = await stub.RegisterDatasetVersion(
        registry_pb2.RegisterDatasetVersionRequest(dataset_version=dataset_version("dv-1"))
    )
    assert not again.created

    mv = await stub.RegisterModelVersion(
        registry_pb2.RegisterModelVersionRequest(
            model_version=registry_pb2.ModelVersion(
                model="support-bot",
                base_model="tiny:llama-xs",
                method="sft",
                dataset_version_ids=["dv-1"],
            )
        )
    )
    model_id = mv.model_version.id
    event = events_pb2.RegistryModelRegistered.FromString(
        await asyncio.wait_for(registered.get(), 10)
    )
    assert event.model_version.id == model_id

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Promote(
            registry_pb2.PromoteRequest(model_version_id=model_id, alias="production")
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0] == "NO_PASSING_EVALUATION"

    await stub.RegisterEvaluation(
        registry_pb2.RegisterEvaluationRequest(
            evaluation=registry_pb2.Evaluation(run=evaluation_run("eval-1", model_id))
        )
    )
    ok = await stub.Promote(
        registry_pb2.PromoteRequest(model_version_id=model_id, alias="production", actor="alice")
    )
    assert ok.evaluation_id == "eval-1"
    event = events_pb2.RegistryModelPromoted.FromString(await asyncio.wait_for(promoted.get(), 10))
    assert (event.assignment.alias, event.assignment.model_version_id) == ("production", model_id)

    by_alias = await stub.GetModelVersion(
        registry_pb2.GetModelVersionRequest(
            ref=common_pb2.ModelVersionRef(model="support-bot", alias="production")
        )
    )
    assert by_alias.model_version.id == model_id and list(by_alias.model_version.aliases) == [
        "production"
    ]

    graph = await stub.GetLineage(
        registry_pb2.GetLineageRequest(model=common_pb2.ModelVersionRef(id=model_id))
    )
    relations = {(e.from_id, e.relation, e.to_id) for e in graph.edges}
    assert (model_id, "trained_on", "dv-1") in relations
    assert ("dv-1", "curation_report", dataset_version("dv-1").curation_report.uri) in relations

    audit = await stub.ListAuditEvents(registry_pb2.ListAuditEventsRequest())
    assert [(e.action, e.actor) for e in audit.events] == [("promote", "alice")]

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetModelVersion(
            registry_pb2.GetModelVersionRequest(ref=common_pb2.ModelVersionRef(id="nope"))
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_pipeline_submission_validation_and_event_stream(
    registry: RunningService,
    stub: registry_pb2_grpc.RegistryServiceStub,  # type: ignore[type-arg]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.SubmitPipelineRun(
            registry_pb2.SubmitPipelineRunRequest(
                spec_yaml="name: x\nstages: [{name: a, kind: teleport}]"
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(bad.value)
    assert reason == "PIPELINE_SPEC_INVALID"
    assert [v.field for v in violations] == ["stages[0].kind"]

    requested: asyncio.Queue[bytes] = asyncio.Queue()

    async def ingest_worker(delivery: Delivery) -> None:  # plays the ingest service
        await requested.put(delivery.data)

    await registry.context.bus.consume("ingest-worker", ingest_worker)
    spec = "name: demo\nstages:\n  - {name: curate, kind: ingest, spec: {dataset: tickets}}\n"
    submitted = await stub.SubmitPipelineRun(
        registry_pb2.SubmitPipelineRunRequest(spec_yaml=spec, request_id="req-1")
    )
    again = await stub.SubmitPipelineRun(
        registry_pb2.SubmitPipelineRunRequest(spec_yaml=spec, request_id="req-1")
    )
    assert again.run.id == submitted.run.id  # idempotent by request id
    ingest = events_pb2.IngestDatasetRequested.FromString(
        await asyncio.wait_for(requested.get(), 10)
    )
    assert ingest.spec.dataset == "tickets"

    cancelled = await stub.CancelPipelineRun(
        registry_pb2.CancelPipelineRunRequest(run_id=submitted.run.id, reason="test over")
    )
    assert cancelled.run.status == common_pb2.JOB_STATUS_CANCELLED
    messages = [
        r.event.message
        async for r in stub.StreamPipelineRunEvents(
            registry_pb2.StreamPipelineRunEventsRequest(run_id=submitted.run.id)
        )
    ]
    assert messages[0].startswith("pipeline demo queued")
    assert any("requested" in m for m in messages)
    assert messages[-1].startswith("pipeline cancelled")
