"""`tunewright run / runs / logs / cancel` against a real registry (in-process, real gRPC and
nats-server). The test plays the ingest service: it takes the registry's request from the
ingest work queue and answers with the fact ingest would publish."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tunewright.core import subjects
from tunewright.core.bus import Delivery, EventBus, event_meta
from tunewright.core.errors import InvalidArgument
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION
from tunewright.registry.v1 import registry_pb2

TW = str(Path(sys.executable).parent / "tunewright")
SPEC = """
name: cli-demo
stages:
  - name: curate
    kind: ingest
    spec: {dataset: tickets, labels: {source: "${params.source}"}}
"""


@pytest.fixture
async def registry(nats_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:  # type: ignore[type-arg]
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path / "registry",
        registry={"outbox_poll_s": 0.1},
    )
    running = await start_service(DEFINITION, settings)
    yield running
    await running.stop()


async def _tw(*args: str, cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TW_")}
    env["COLUMNS"] = "200"
    proc = await asyncio.create_subprocess_exec(
        TW,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def _play_ingest(bus: EventBus, *, fail: bool) -> events_pb2.IngestDatasetRequested:
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        await got.put(delivery)

    sub = await bus.consume("ingest-worker", take)
    try:
        request = (await asyncio.wait_for(got.get(), 30)).decode(events_pb2.IngestDatasetRequested)
    finally:
        await sub.stop()
    meta = event_meta(producer="test-ingest", workspace="default")
    await asyncio.sleep(1.0)  # the CLI subscribes to progress after submitting
    for step in (1, 2):  # what the CLI turns into a progress bar
        progress = events_pb2.IngestJobProgressed(meta=meta, job_id=request.job_id)
        progress.event.message = f"scrubbed {step * 500} of 1000 rows"
        progress.event.metrics.update({"step": step * 500, "total_steps": 1000})
        await bus.publish(subjects.INGEST_JOB_PROGRESSED, progress, key=f"{request.job_id}/{step}")
        await asyncio.sleep(0.3)
    if fail:
        fact = events_pb2.IngestDatasetRejected(meta=meta, job_id=request.job_id)
        fact.error.reason = "ALL_ROWS_QUARANTINED"
        fact.error.message = "every row was quarantined (invalid JSON)"
        await bus.publish(subjects.INGEST_DATASET_REJECTED, fact, key=request.job_id)
    else:
        dv = registry_pb2.DatasetVersion(
            id="dv-cli", dataset="tickets", content_hash="h1", kind=1, workspace="default"
        )
        curated = events_pb2.IngestDatasetCurated(
            meta=meta, job_id=request.job_id, dataset_version=dv
        )
        await bus.publish(subjects.INGEST_DATASET_CURATED, curated, key=request.job_id)
    return request


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails"])
async def test_run_follows_a_pipeline_to_its_end(
    registry: RunningService,
    nats_url: str,
    tmp_path: Path,
    fail: bool,  # type: ignore[type-arg]
) -> None:
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    address = f"127.0.0.1:{registry.port}"
    bus = await EventBus.connect(nats_url, name="test-ingest")
    try:
        cli = asyncio.create_task(
            _tw(
                "run",
                "pipeline.yaml",
                "-p",
                "source=upload-7",
                "--registry",
                address,
                "--nats-url",
                nats_url,
                cwd=tmp_path,
            )
        )
        request = await _play_ingest(bus, fail=fail)
        assert request.spec.labels["source"] == "upload-7"
        code, out = await cli
    finally:
        await bus.close()
    assert "pipeline cli-demo queued" in out
    assert "scrubbed 1000 of 1000 rows" in out  # live progress from NATS
    if fail:
        assert code == 1, out
        assert "pipeline failed at stage curate" in out
        assert "every row was quarantined" in out
    else:
        assert code == 0, out
        assert "dataset_version_id=dv-cli" in out and "succeeded" in out

    code, listed = await _tw("runs", "--registry", address, cwd=tmp_path)
    assert code == 0 and "cli-demo" in listed


async def test_a_dead_lettered_stage_request_fails_the_pipeline(
    registry: RunningService,
    nats_url: str,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    bus = await EventBus.connect(nats_url, name="test-ingest")

    async def refuse(delivery: Delivery) -> None:  # an ingest service that cannot do this job
        raise InvalidArgument("source artifact is not readable")

    try:
        await bus.consume("ingest-worker", refuse)
        code, out = await _tw(
            "run",
            "pipeline.yaml",
            "-p",
            "source=x",
            "--registry",
            f"127.0.0.1:{registry.port}",
            cwd=tmp_path,
        )
    finally:
        await bus.close()
    assert code == 1, out
    assert "pipeline failed at stage curate" in out
    assert "source artifact is not readable" in out


async def test_cancel_and_logs(registry: RunningService, tmp_path: Path) -> None:  # type: ignore[type-arg]
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    address = f"127.0.0.1:{registry.port}"
    code, out = await _tw(
        "run", "pipeline.yaml", "-p", "source=x", "--detach", "--registry", address, cwd=tmp_path
    )
    assert code == 0, out
    run_id = out.strip().splitlines()[-1]
    code, out = await _tw(
        "cancel", run_id, "--reason", "wrong data", "--registry", address, cwd=tmp_path
    )
    assert code == 0 and "cancelled" in out, out
    code, out = await _tw("logs", run_id, "--registry", address, cwd=tmp_path)
    assert code == 0 and "pipeline cancelled" in out and "wrong data" in out, out


async def test_bad_spec_is_refused_with_field_reasons(
    registry: RunningService, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    (tmp_path / "bad.yaml").write_text("name: bad\nstages:\n  - {name: a, kind: teleport}\n")
    code, out = await _tw(
        "run", "bad.yaml", "--registry", f"127.0.0.1:{registry.port}", cwd=tmp_path
    )
    assert code == 1
    assert "PIPELINE_SPEC_INVALID" in out and "stages[0].kind" in out


async def test_upload_prints_the_artifact_uri(
    nats_url: str, tmp_path: Path, ticketgen: Any
) -> None:
    from tunewright.core.artifacts import ArtifactRef
    from tunewright.ingest.server import DEFINITION as INGEST

    settings = load_settings(
        INGEST.settings_cls, nats={"url": nats_url}, grpc={"port": 0}, data_dir=tmp_path / "data"
    )
    ingest = await start_service(INGEST, settings)
    try:
        source = ticketgen.write_tickets(tmp_path / "src", 20, seed=1)
        code, out = await _tw(
            "upload", str(source), "--ingest", f"127.0.0.1:{ingest.port}", cwd=tmp_path
        )
        assert code == 0, out
        uri = out.strip().splitlines()[-1]
        assert uri.startswith("tw-artifact:sha256:")
        stored = await ingest.context.artifacts.get_bytes(ArtifactRef.from_uri(uri))
        assert stored == source.read_bytes()
    finally:
        await ingest.stop()
