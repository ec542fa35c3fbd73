"""Served answers close the loop: every answer reaches the monitor as traffic (scrubbed by the
real ingest path before anything stores it), and a thumbs-down given through the serve API's
feedback endpoint counts in the monitor's outcome detector.

Real parts: nats-server, registry (SQLite), ingest (presidio + spaCy), monitor with the
``outcome`` drift detector, serve (transformers backend on a ``tiny:`` base, one trained
LoRA adapter), the official ``openai`` client and httpx for the feedback call.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
from google.protobuf import json_format
from test_openai_api import KEY, register
from trained_adapters import TrainedFolder

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.core.splits import read_split_rows
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.monitor.server import DEFINITION as MONITOR
from tunewright.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.serve.server import DEFINITION as SERVE

EMAIL = "dana.whitfield@example.org"
BASELINE = ["My order is late", "The app crashes when I log in"]
UNHAPPY = [f"I was charged twice, reach me at {EMAIL}", "Where is my refund for last month"]


async def _until(check: Any, timeout_s: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_served_answers_reach_the_monitor_and_thumbs_down_counts_as_an_outcome(
    nats_url: str, tmp_path: Path, trained: dict[str, TrainedFolder]
) -> None:
    data = tmp_path / "data"
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": data}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    services = [registry]
    try:
        services.append(await start_service(INGEST, load_settings(INGEST.settings_cls, **common)))
        registry_address = f"127.0.0.1:{registry.port}"
        monitor = await start_service(
            MONITOR,
            load_settings(
                MONITOR.settings_cls,
                **common,
                monitor={
                    "registry_address": registry_address,
                    "window": {"size": 2, "max_wait_s": 60, "min_size": 2},
                    "detectors": [{"name": "outcome"}],
                },
            ),
        )
        services.append(monitor)
        serve = await start_service(
            SERVE,
            load_settings(
                SERVE.settings_cls,
                **common,
                serve={
                    "registry_address": registry_address,
                    "http": {"port": 0, "api_key": KEY},
                    "traffic": {"feedback_grace_s": 1.5},
                },
            ),
        )
        services.append(serve)
        base_url = f"http://127.0.0.1:{serve.context.resources['http_port']}"
        api = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)
        async with (
            grpc.aio.insecure_channel(registry_address) as rch,
            grpc.aio.insecure_channel(f"127.0.0.1:{monitor.port}") as mch,
            httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {KEY}"}) as web,
        ):
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            mstub = monitor_pb2_grpc.MonitorServiceStub(mch)
            store = LocalArtifactStore(data / "artifacts")
            version = await register(rstub, store, trained["refund"])
            await rstub.Promote(
                registry_pb2.PromoteRequest(
                    model_version_id=version.id, alias="production", force=True, reason="test"
                )
            )

            async def chat(prompt: str) -> str:
                reply = await api.chat.completions.create(
                    model="support-bot:production",
                    messages=[{"role": "user", "content": prompt}],
                    temperature=0,
                    max_tokens=16,
                    metadata={"category": "billing"},
                )
                return reply.id

            # window 1 (the outcome detector's baseline): two answers nobody complained about
            for prompt in BASELINE:
                await chat(prompt)
            # window 2: two answers, both thumbed down (one also escalated) within the grace
            unhappy = [await chat(prompt) for prompt in UNHAPPY]
            for n, completion_id in enumerate(unhappy):
                reply = await web.post(
                    "/v1/feedback",
                    json={"completion_id": completion_id, "thumbs": -1, "escalated": n == 0},
                )
                assert reply.status_code == 200, reply.text
            missing = await web.post("/v1/feedback", json={"completion_id": "chatcmpl_nope"})
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "completion_not_found"

            async def analysed() -> list[monitor_pb2.TrafficWindow]:
                windows = list(
                    (
                        await mstub.GetDriftReport(
                            monitor_pb2.GetDriftReportRequest(model_version_id=version.id)
                        )
                    ).windows
                )
                done = [w for w in windows if w.status in ("analysed", "baseline")]
                return windows if len(done) == 2 and any(w.results for w in windows) else []

            windows = await _until(analysed, what="two analysed traffic windows")
            tested = next(w for w in windows if w.results)
            outcome = next(r for r in tested.results if r.detector == "outcome")
            evidence = json_format.MessageToDict(outcome.evidence)
            assert evidence["negative_rate"] == {"reference": 0.0, "current": 1.0}
            assert evidence["escalated_rate"] == {"reference": 0.0, "current": 0.5}
            assert tested.interactions == 2

            # feedback after the interaction went to the monitor is refused, not double-counted
            late = await web.post("/v1/feedback", json={"completion_id": unhappy[0], "thumbs": 1})
            assert late.status_code == 409
            assert late.json()["error"]["code"] == "feedback_too_late"

            # what the monitor keeps is ingest's scrubbed window: the e-mail never got there
            dataset = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(id=tested.dataset_version_id)
                    )
                )
            ).dataset_version
            texts = []
            for split in dataset.splits.values():
                raw = await store.get_bytes(ArtifactRef.from_uri(split.uri))
                texts += [str(row) for row in read_split_rows(raw, split.media_type)]
            assert texts and not any(EMAIL in t for t in texts)
            assert any("charged twice" in t for t in texts)
    finally:
        for service in reversed(services):
            await service.stop()
