"""The Node.js example (examples/node-client) drives a real registry: once by gRPC, once by
publishing tw.pipeline.run.requested on NATS, streaming the run's events either way. The test
plays the ingest service. Needs the machine's node and the npm registry (npm ci)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tunewright.core import subjects
from tunewright.core.bus import Delivery, EventBus, event_meta
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION
from tunewright.registry.v1 import registry_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-client"
SPEC = "name: from-node\nstages:\n  - {name: curate, kind: ingest, spec: {dataset: tickets}}\n"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(not (NODE and NPM), reason="node/npm not installed")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if not (EXAMPLE / "node_modules" / "nats").exists():
        subprocess.run(
            [NPM or "npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, check=True, timeout=300
        )
    return EXAMPLE / "node_modules"


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


async def _play_ingest(bus: EventBus) -> None:
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        await got.put(delivery)

    sub = await bus.consume("ingest-worker", take)
    try:
        request = (await asyncio.wait_for(got.get(), 30)).decode(events_pb2.IngestDatasetRequested)
    finally:
        await sub.stop()
    fact = events_pb2.IngestDatasetCurated(
        meta=event_meta(producer="test-ingest", workspace="default"),
        job_id=request.job_id,
        dataset_version=registry_pb2.DatasetVersion(
            id=f"dv-{request.job_id}", dataset="tickets", content_hash=request.job_id, kind=1
        ),
    )
    await bus.publish(subjects.INGEST_DATASET_CURATED, fact, key=request.job_id)


@pytest.mark.parametrize("via", ["grpc", "nats"])
async def test_node_client_submits_and_streams(
    via: str,
    node_modules: Path,
    registry: RunningService,
    nats_url: str,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    bus = await EventBus.connect(nats_url, name="test-ingest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TW_")}
    try:
        node = await asyncio.create_subprocess_exec(
            NODE or "node",
            str(EXAMPLE / "submit.mjs"),
            "--registry", f"127.0.0.1:{registry.port}",
            "--via", via,
            "--nats", nats_url,
            str(tmp_path / "pipeline.yaml"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        await _play_ingest(bus)
        out, _ = await asyncio.wait_for(node.communicate(), 60)
    finally:
        await bus.close()
    text = out.decode()
    assert node.returncode == 0, text
    assert "pipeline from-node queued" in text
    assert "ended: JOB_STATUS_SUCCEEDED" in text
    if via == "nats":
        assert "published tw.pipeline.run.requested" in text
