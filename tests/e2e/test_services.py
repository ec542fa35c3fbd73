"""Every service, started in-process by the service kit against a real nats-server and a real
gRPC server on port 0: SERVING, then a clean stop. A work request the service cannot run fails
the job with its reason, and an unknown job is NOT_FOUND (not INTERNAL). A broken plugin stops
start-up with its name."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunewright.core import subjects
from tunewright.core.bus import EventBus
from tunewright.core.service import RunningService, ServiceDefinition, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc

SERVICES = ("ingest", "synth", "trainer", "evaluator", "registry", "monitor", "serve")
# what a service needs beyond NATS, a port and a data dir to start
EXTRA_SETTINGS = {"serve": {"serve": {"http": {"port": 0, "api_key": "test-key"}}}}


def _definition(name: str) -> ServiceDefinition:  # type: ignore[type-arg]
    return importlib.import_module(f"tunewright.{name}.server").DEFINITION  # type: ignore[no-any-return]


async def _start(name: str, nats_url: str, tmp_path: Path) -> RunningService:  # type: ignore[type-arg]
    definition = _definition(name)
    settings = load_settings(
        definition.settings_cls,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=tmp_path / "data",
        **EXTRA_SETTINGS.get(name, {}),
    )
    return await start_service(definition, settings)


@pytest.mark.parametrize("name", SERVICES)
async def test_every_service_starts_serves_and_stops(
    name: str, nats_url: str, tmp_path: Path
) -> None:
    running = await _start(name, nats_url, tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            service_name = running.server.services[0]
            assert service_name == f"tunewright.{name}.v1.{name.capitalize()}Service"
            for checked in ("", service_name):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=checked))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop()


async def test_an_invalid_synth_request_fails_the_job_with_its_reason(
    nats_url: str, tmp_path: Path
) -> None:
    running = await _start("synth", nats_url, tmp_path)
    try:
        client = await EventBus.connect(nats_url, name="test-client")
        try:
            sub = await client.js.subscribe(subjects.SYNTH_JOB_FAILED, ordered_consumer=True)
            await client.publish(
                subjects.SYNTH_DATASET_REQUESTED,
                events_pb2.SynthDatasetRequested(meta={"event_id": "e1"}, job_id="syn-bad"),
                key="e1",
            )
            fact = events_pb2.SynthJobFailed.FromString((await sub.next_msg(timeout=10)).data)
        finally:
            await client.close()
        assert fact.job_id == "syn-bad"
        assert fact.error.reason == "INVALID_SYNTH_SPEC"
    finally:
        await running.stop()


async def test_unknown_job_is_not_found_not_internal(nats_url: str, tmp_path: Path) -> None:
    running = await _start("synth", nats_url, tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = synth_pb2_grpc.SynthServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id="x"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await running.stop()


def test_broken_plugin_stops_service_start_up_with_its_name(tmp_path: Path, nats_url: str) -> None:
    # a real distribution on sys.path (dist-info + entry point) whose module fails to import
    dist = tmp_path / "site"
    (dist / "acme_broken-0.1.dist-info").mkdir(parents=True)
    (dist / "acme_broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-broken\nVersion: 0.1\n"
    )
    (dist / "acme_broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[tunewright]\nacme-broken = acme_broken_plugin\n"
    )
    (dist / "acme_broken_plugin.py").write_text(
        textwrap.dedent("""
            import not_a_real_dependency_xyz  # noqa: F401
        """)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TW_")}
    env.update(PYTHONPATH=str(dist), TW_NATS__URL=nats_url, TW_DATA_DIR=str(tmp_path / "d"))
    result = subprocess.run(
        [sys.executable, "-m", "tunewright.synth.server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "acme-broken" in result.stderr
    assert "not_a_real_dependency_xyz" in result.stderr

    # the same plugin, disabled by name: the service starts (then we stop it)
    env["TW_PLUGINS__DISABLED"] = '["acme-broken"]'
    env["TW_GRPC__PORT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunewright.synth.server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "service serving" in line:
                break
        else:
            pytest.fail("synth did not start with the broken plugin disabled")
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
