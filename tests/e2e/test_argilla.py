"""Human feedback through a real Argilla server (scripts/argilla/serve.py in .venv-argilla:
argilla-server 2.8.0, Debian's redis-server, the in-memory search engine).

Records go to Argilla through the ``argilla`` feedback backend; people rank them as annotator
users (not the owner) through Argilla's REST API or its web UI in headless Chromium; a pipeline
``feedback`` stage (registry -> synth service, both real, over real NATS) waits for those
rankings, pulls them back as preference pairs with the annotators' names and registers a
preference dataset version. One Argilla server serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from tunewright_argilla import ArgillaFeedback

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.synth.server import DEFINITION as SYNTH

ROOT = Path(__file__).resolve().parents[2]
ARGILLA_PYTHON = ROOT / ".venv-argilla" / "bin" / "python"
UI_DIR = Path(__file__).resolve().parent / "argilla_ui"
SCREENSHOT = Path("/tmp/argilla-screenshot.png")
OWNER_KEY = "owner.key." + uuid.uuid4().hex


@dataclass(frozen=True)
class Argilla:
    url: str
    owner_key: str
    users: dict[str, dict[str, str]]  # username -> {password, api_key}
    started_s: float


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def argilla(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Argilla]:
    if not ARGILLA_PYTHON.exists():
        pytest.fail(f"{ARGILLA_PYTHON} missing: `make install` builds argilla-server's venv")
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server missing: apt-get install redis-server")
    home = tmp_path_factory.mktemp("argilla")
    users = {
        name: {
            "password": f"{name}-pw-{uuid.uuid4().hex[:8]}",
            "api_key": f"{name}.{uuid.uuid4().hex}",
        }
        for name in ("annotator", "annotator2")
    }
    users_file = home / "users.json"
    users_file.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "username": "owner",
                        "role": "owner",
                        "password": "owner-pw-123",
                        "api_key": OWNER_KEY,
                    },
                    *({"username": n, "role": "annotator", **u} for n, u in users.items()),
                ]
            }
        )
    )
    users_file.chmod(0o600)
    port = _free_port()
    started = time.monotonic()
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(ARGILLA_PYTHON),
            str(ROOT / "scripts" / "argilla" / "serve.py"),
            "--home",
            str(home / "home"),
            "--port",
            str(port),
            "--users",
            str(users_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail("argilla exited:\n" + (home / "server.log").read_text()[-3000:])
            try:
                if requests.get(
                    f"{url}/api/v1/status", timeout=1, headers={"X-Argilla-Api-Key": OWNER_KEY}
                ).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("argilla not up in 90 s:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        print(f"\nargilla started in {elapsed:.1f} s")
        yield Argilla(url, OWNER_KEY, users, elapsed)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _records(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "record_id": f"{prefix}-{i}",
            "prompt": [{"role": "user", "content": f"Order #{i} has not arrived, where is it?"}],
            "reference": f"Sorry! Order #{i} ships today; tracking follows by email.",
            "responses": [
                f"Order #{i} ships today, sorry for the wait.",
                "I do not know.",
                f"Please contact support about order #{i}.",
            ],
            "prompts_dataset_version_id": "",
        }
        for i in range(n)
    ]


def _submit(argilla: Argilla, user: str, server_id: str, ranking: list[int]) -> None:
    """One ranking as ``user`` through Argilla's REST API (what the UI does on Submit)."""
    reply = requests.post(
        f"{argilla.url}/api/v1/records/{server_id}/responses",
        headers={"X-Argilla-Api-Key": argilla.users[user]["api_key"]},
        json={
            "status": "submitted",
            "values": {
                "ranking": {
                    "value": [
                        {"value": f"response_{i}", "rank": rank + 1}
                        for rank, i in enumerate(ranking)
                    ]
                }
            },
        },
        timeout=10,
    )
    assert reply.status_code == 201, reply.text


def _server_ids(backend: ArgillaFeedback, dataset: str) -> dict[str, str]:
    found = backend._dataset(dataset)
    return {str(r.id): str(r._server_id) for r in found.records()}


class Services:
    """Registry and synth, real, in this process; the synth service finds Argilla through the
    ARGILLA_API_URL / ARGILLA_API_KEY environment (as `tunewright up --with-argilla` sets)."""

    def __init__(self, nats_url: str, data_dir: Path) -> None:
        self.common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": data_dir}
        self.data_dir = data_dir
        self.running: list[Any] = []

    async def __aenter__(self) -> registry_pb2_grpc.RegistryServiceStub:
        registry = await start_service(
            REGISTRY, load_settings(REGISTRY.settings_cls, **self.common)
        )
        self.running.append(registry)
        synth_settings = load_settings(
            SYNTH.settings_cls,
            **self.common,
            synth={"registry_address": f"127.0.0.1:{registry.port}"},
        )
        self.running.append(await start_service(SYNTH, synth_settings))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}")
        return registry_pb2_grpc.RegistryServiceStub(self.channel)

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        for service in reversed(self.running):
            await service.stop()


def _feedback_pipeline(dataset: str, *, min_records: int) -> str:
    return f"""
name: argilla-feedback
stages:
  - name: feedback
    kind: feedback
    spec:
      feedback_collection:
        feedback_backend: {{name: argilla}}
        feedback_dataset: {dataset}
        output_dataset: support-preferences
        min_records: {min_records}
        wait_timeout_seconds: 120
        poll_interval_seconds: 1
"""


async def _run_until_done(
    stub: registry_pb2_grpc.RegistryServiceStub, run_id: str, timeout_s: float = 150
) -> registry_pb2.PipelineRun:
    deadline = time.monotonic() + timeout_s
    while True:
        run = (await stub.GetPipelineRun(registry_pb2.GetPipelineRunRequest(run_id=run_id))).run
        if run.status >= common_pb2.JOB_STATUS_SUCCEEDED or time.monotonic() > deadline:
            return run
        await asyncio.sleep(0.2)


async def _pairs(
    stub: registry_pb2_grpc.RegistryServiceStub, data_dir: Path, version_id: str
) -> tuple[registry_pb2.DatasetVersion, list[dict[str, Any]]]:
    version = (
        await stub.GetDatasetVersion(
            registry_pb2.GetDatasetVersionRequest(ref=common_pb2.DatasetVersionRef(id=version_id))
        )
    ).dataset_version
    store = LocalArtifactStore(data_dir / "artifacts")
    body = await store.get_bytes(ArtifactRef.from_uri(version.splits["train"].uri))
    return version, [json.loads(line) for line in body.decode().splitlines()]


async def test_rest_rankings_by_annotators_become_a_preference_dataset_version(
    argilla: Argilla, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGILLA_API_URL", argilla.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla.owner_key)
    dataset = f"prefs-rest-{uuid.uuid4().hex[:8]}"
    backend = ArgillaFeedback(annotators_per_record=2)
    started = time.monotonic()
    url = backend.publish(dataset, _records("rest", 3))
    assert url.startswith(argilla.url) and url.endswith("/annotation-mode")
    assert [r["record_id"] for r in backend.records(dataset)] == ["rest-0", "rest-1", "rest-2"]
    ids = _server_ids(backend, dataset)

    async with Services(nats_url, tmp_path / "data") as stub:
        run = (
            await stub.SubmitPipelineRun(
                registry_pb2.SubmitPipelineRunRequest(
                    spec_yaml=_feedback_pipeline(dataset, min_records=2)
                )
            )
        ).run
        # nobody has ranked yet: the stage waits instead of failing
        await asyncio.sleep(2.5)
        run = (await stub.GetPipelineRun(registry_pb2.GetPipelineRunRequest(run_id=run.id))).run
        assert run.status == common_pb2.JOB_STATUS_RUNNING, run
        # two annotators agree on rest-0; one ranks rest-1 (its best == response 2)
        await asyncio.to_thread(_submit, argilla, "annotator", ids["rest-0"], [0, 2, 1])
        await asyncio.to_thread(_submit, argilla, "annotator2", ids["rest-0"], [0, 1, 2])
        await asyncio.to_thread(_submit, argilla, "annotator", ids["rest-1"], [2, 0, 1])
        run = await _run_until_done(stub, run.id)
        stage = run.stages[0]
        assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, (run.error, stage)
        version, rows = await _pairs(stub, tmp_path / "data", stage.outputs["dataset_version_id"])

    print(f"\nREST e2e: {time.monotonic() - started:.1f} s")
    assert version.kind == common_pb2.DATASET_KIND_PREFERENCE
    assert version.labels["feedback_backend"] == "argilla"
    assert version.labels["simulated"] == "false"
    assert version.counts.accepted == 2
    by_id = {r["record_id"]: r for r in rows}
    assert by_id["rest-0"]["annotators"] == ["annotator", "annotator2"]
    assert by_id["rest-0"]["chosen"] == "Order #0 ships today, sorry for the wait."
    # worst: one vote each; the first annotator's ranking breaks the tie
    assert by_id["rest-0"]["rejected"] == "I do not know."
    assert by_id["rest-1"]["annotators"] == ["annotator"]
    assert by_id["rest-1"]["chosen"] == "Please contact support about order #1."
    assert by_id["rest-1"]["rejected"] == "I do not know."
    assert "owner" not in {a for r in rows for a in r["annotators"]}
    # the raw rankings keep each annotator: several annotators, several rankings
    rankings = backend.collect(dataset)
    assert sorted((r["record_id"], r["annotator"]) for r in rankings) == [
        ("rest-0", "annotator"),
        ("rest-0", "annotator2"),
        ("rest-1", "annotator"),
    ]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium missing: apt-get install chromium (see Makefile: install-browser)")
    return found


def _drive_ui(argilla: Argilla, dataset_id: str, user: str) -> subprocess.CompletedProcess[str]:
    if not (UI_DIR / "node_modules" / "playwright-core").exists():
        pytest.fail(f"playwright-core missing: (cd {UI_DIR} && npm ci)")
    env = {
        **os.environ,
        "ARGILLA_URL": argilla.url,
        "ARGILLA_DATASET_ID": dataset_id,
        "ARGILLA_USER": user,
        "ARGILLA_PASSWORD": argilla.users[user]["password"],
        "CHROMIUM": _chromium(),
        "SCREENSHOT": str(SCREENSHOT),
    }
    return subprocess.run(
        ["node", str(UI_DIR / "rank.mjs")], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_ranking_submitted_in_the_argilla_ui_comes_back_as_a_pair(argilla: Argilla) -> None:
    backend = ArgillaFeedback(api_url=argilla.url, api_key=argilla.owner_key)
    dataset = f"prefs-ui-{uuid.uuid4().hex[:8]}"
    backend.publish(dataset, _records("ui", 1))
    started = time.monotonic()
    done = _drive_ui(argilla, str(backend._dataset(dataset).id), "annotator")
    print(f"\nbrowser: {time.monotonic() - started:.1f} s\n{done.stdout}\n{done.stderr[-2000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert SCREENSHOT.exists()
    (ranking,) = backend.collect(dataset)
    assert ranking["record_id"] == "ui-0" and ranking["annotator"] == "annotator"
    assert sorted(ranking["ranking"]) == [0, 1, 2]
    expected = json.loads(done.stdout.strip().splitlines()[-1])["ranking"]
    assert ranking["ranking"] == expected


async def test_collection_waits_reports_progress_and_gives_up_after_its_timeout(
    argilla: Argilla, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preferences.collect polls Argilla while too few records are ranked, says how many are
    through ``progress``, and fails with NOT_ENOUGH_FEEDBACK when its wait is over."""
    from tunewright.core.errors import FailedPrecondition
    from tunewright.core.plugins import PluginManager
    from tunewright.synth.preferences import Preferences
    from tunewright.synth.v1 import synth_pb2

    backend = ArgillaFeedback(api_url=argilla.url, api_key=argilla.owner_key)
    dataset = f"prefs-wait-{uuid.uuid4().hex[:8]}"
    backend.publish(dataset, _records("wait", 2))
    ids = _server_ids(backend, dataset)
    preferences = Preferences(
        registry=None,  # type: ignore[arg-type]  # collect never asks the registry
        artifacts=LocalArtifactStore(tmp_path / "artifacts"),
        plugins=PluginManager().load(),
        workdir=tmp_path,
    )
    # the key comes from the synth process's environment, never from the spec
    monkeypatch.setenv("ARGILLA_API_URL", argilla.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla.owner_key)
    params = {"api_url": argilla.url}
    spec = synth_pb2.SynthJobSpec(
        feedback_collection=synth_pb2.FeedbackCollectionTask(
            feedback_backend={"name": "argilla", "params": params},
            feedback_dataset=dataset,
            output_dataset="support-preferences",
            min_records=2,
            wait_timeout_seconds=4,
            poll_interval_seconds=1,
        )
    )
    seen: list[tuple[str, dict[str, float]]] = []

    async def progress(message: str, metrics: dict[str, float]) -> None:
        seen.append((message, metrics))
        if len(seen) == 1:  # someone ranks one record while the stage waits
            await asyncio.to_thread(_submit, argilla, "annotator", ids["wait-0"], [1, 0, 2])

    started = time.monotonic()
    with pytest.raises(FailedPrecondition) as failed:
        await preferences.collect("job-wait", spec, progress)
    waited = time.monotonic() - started
    assert failed.value.reason == "NOT_ENOUGH_FEEDBACK"
    assert "1 usable rankings after waiting 4 s" in failed.value.message
    assert 4 <= waited < 15, waited
    assert [m for _, m in seen] == [
        {"step": 0.0, "total_steps": 2.0},
        {"step": 1.0, "total_steps": 2.0},
    ]
    assert seen[0][0] == "waiting for rankings in argilla: 0/2 records ranked"
