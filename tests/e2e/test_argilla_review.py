"""Human review of synthetic rows in a real Argilla server, end to end.

A synth job with ``human_review`` (registry, ingest and synth, real, over real NATS) generates
two rows through the ``openai-compatible`` generator (a real HTTP endpoint on port 0 that
answers from a fixed script, so the test knows the rows), filters them, and publishes the
survivors to Argilla (the ``argilla`` backend's review extension: a record per row with an
accept/reject label question). An annotator user (not the owner) accepts one and rejects the
other through Argilla's REST API; the job then sends only the accepted row through ingest, and
the new dataset version holds it, with ``reviewed_by``. The Argilla server is the ``argilla``
fixture of test_argilla.py (scripts/argilla/serve.py in .venv-argilla), one for this module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from tunewright.core.splits import read_split_rows
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.synth.server import DEFINITION as SYNTH
from tunewright.synth.synthetic import REQUEST_SYSTEM
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc


def _load_argilla_tests() -> Any:
    """test_argilla.py by path (tests/e2e is no package): its ``argilla`` fixture starts the
    real server."""
    path = Path(__file__).resolve().parent / "test_argilla.py"
    spec = importlib.util.spec_from_file_location("_tw_e2e_argilla", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_ARGILLA = _load_argilla_tests()
argilla = _ARGILLA.argilla  # the module-scoped fixture: one Argilla server for this module

SEEDS = {
    "billing": [
        "Why was I charged twice for my subscription this month?",
        "Can I get an invoice with my company's VAT number on it?",
        "How do I change the credit card used for billing?",
        "My refund for order 5521 has not arrived after ten days.",
        "Is there a discount if I pay for a whole year up front?",
        "How do I download all my past invoices as PDF files?",
    ],
    "login": [
        "How do I reset my password when the reset email never arrives?",
        "The two-factor code from my authenticator app is always rejected.",
    ],
}
#: the generator's script: each request and the answer it gets
SCRIPT = {
    "Can I sign in with my Google account instead of a separate password?": (
        "Yes: on the sign-in page choose 'Continue with Google' and confirm the account link."
    ),
    "Why does the app log me out every time I close the browser window?": (
        "Tick 'Keep me signed in' at login; private browsing windows always forget the session."
    ),
}


@pytest.fixture
def chat_server() -> Iterator[str]:
    """An OpenAI-compatible chat endpoint answering from :data:`SCRIPT` in order."""
    requests_left = list(SCRIPT)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            messages = body["messages"]
            with lock:
                if messages[0]["content"] == REQUEST_SYSTEM:
                    text = requests_left.pop(0)
                else:
                    text = SCRIPT[messages[-1]["content"]]
            data = json.dumps(
                {
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _seed_jsonl() -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": f"Thanks for reaching out about this: {i}."},
            ],
            "category": category,
        }
        for category, texts in SEEDS.items()
        for i, text in enumerate(texts)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def _until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s"
        await asyncio.sleep(0.2)


def _review(argilla: Any, server_id: str, label: str) -> None:
    """One decision as the annotator through Argilla's REST API (what the UI does on Submit)."""
    reply = requests.post(
        f"{argilla.url}/api/v1/records/{server_id}/responses",
        headers={"X-Argilla-Api-Key": argilla.users["annotator"]["api_key"]},
        json={"status": "submitted", "values": {"review": {"value": label}}},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text


async def test_an_annotator_accepts_one_synthetic_row_and_rejects_another(
    argilla: Any,
    nats_url: str,
    tmp_path: Path,
    chat_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the synth service's Argilla, as `tunewright up --with-argilla` sets it
    monkeypatch.setenv("ARGILLA_API_URL", argilla.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla.owner_key)
    review_dataset = f"synth-review-{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "nats": {"url": nats_url},
        "grpc": {"port": 0},
        "data_dir": tmp_path / "data",
    }
    started = time.monotonic()
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    services = [registry]
    try:
        ingest = await start_service(INGEST, load_settings(INGEST.settings_cls, **common))
        services.append(ingest)
        synth_settings = load_settings(
            SYNTH.settings_cls, **common, synth={"registry_address": f"127.0.0.1:{registry.port}"}
        )
        services.append(await start_service(SYNTH, synth_settings))
        artifacts = LocalArtifactStore(ingest.context.settings.artifacts_root)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as ich,
            grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch,
            grpc.aio.insecure_channel(f"127.0.0.1:{services[-1].port}") as sch,
        ):
            istub = ingest_pb2_grpc.IngestServiceStub(ich)
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            sstub = synth_pb2_grpc.SynthServiceStub(sch)
            source = await artifacts.put_bytes(_seed_jsonl(), "application/jsonl")
            ingest_job = (
                await istub.SubmitIngestJob(
                    ingest_pb2.SubmitIngestJobRequest(
                        spec=ingest_pb2.IngestSpec(
                            dataset="tickets",
                            source=common_pb2.ArtifactRef(uri=source.uri, sha256=source.sha256),
                            split=ingest_pb2.SplitSpec(eval_fraction=0.0, seed=1),
                        )
                    )
                )
            ).job

            async def seed_version() -> str:
                job = (
                    await istub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=ingest_job.id))
                ).job
                assert job.status != common_pb2.JOB_STATUS_FAILED, job.error
                if not job.dataset_version_id:
                    return ""
                try:  # the registry records the curated fact asynchronously
                    await rstub.GetDatasetVersion(
                        registry_pb2.GetDatasetVersionRequest(
                            ref=common_pb2.DatasetVersionRef(id=job.dataset_version_id)
                        )
                    )
                except grpc.aio.AioRpcError:
                    return ""
                return str(job.dataset_version_id)

            seed_id = await _until(seed_version, 120, "curated seed version")

            spec = synth_pb2.SynthJobSpec(
                synthetic_examples=synth_pb2.SyntheticExamplesTask(
                    seed_dataset=common_pb2.DatasetVersionRef(id=seed_id),
                    generator=common_pb2.PluginRef(name="openai-compatible"),
                    num_examples=2,
                    target_categories=["login"],
                    max_synthetic_share=0.5,
                    filters=[common_pb2.PluginRef(name="length")],
                    output_dataset="tickets-reviewed",
                    human_review=True,
                    review_backend=common_pb2.PluginRef(name="argilla"),
                    review_dataset=review_dataset,
                    review_timeout_seconds=120,
                    review_poll_interval_seconds=1,
                ),
                seed=3,
            )
            spec.synthetic_examples.generator.params.update(
                {"base_url": chat_server, "model": "scripted"}
            )
            job = (await sstub.SubmitSynthJob(synth_pb2.SubmitSynthJobRequest(spec=spec))).job

            # the rows wait in Argilla: the owner's view of the review dataset
            owner = ArgillaFeedback(api_url=argilla.url, api_key=argilla.owner_key)

            async def published() -> dict[str, tuple[str, str]]:
                found = await asyncio.to_thread(owner._dataset, review_dataset)
                if found is None:
                    return {}
                records = await asyncio.to_thread(lambda: list(found.records()))
                if len(records) < 2:
                    return {}
                return {r.fields["request"]: (str(r.id), str(r._server_id)) for r in records}

            records = await _until(published, 60, "review records in Argilla")
            assert set(records) == set(SCRIPT)
            job = (await sstub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=job.id))).job
            assert job.status == common_pb2.JOB_STATUS_RUNNING, job  # waiting for people
            keep, drop = list(SCRIPT)
            await asyncio.to_thread(_review, argilla, records[keep][1], "accept")
            await asyncio.to_thread(_review, argilla, records[drop][1], "reject")

            async def finished() -> synth_pb2.SynthJob | None:
                got = (await sstub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=job.id))).job
                return got if got.status >= common_pb2.JOB_STATUS_SUCCEEDED else None

            job = await _until(finished, 120, "finished synth job")
            assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.error
            version = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(id=job.dataset_version_id)
                    )
                )
            ).dataset_version
            ref = version.splits["train"]
            rows = read_split_rows(
                await artifacts.get_bytes(ArtifactRef.from_uri(ref.uri)), ref.media_type
            )
    finally:
        for running in reversed(services):
            await running.stop()
    print(
        f"\nreview e2e (services, generation, review, ingest): {time.monotonic() - started:.1f} s"
    )

    counts = dict(job.counts)
    assert counts["generated"] == 2 and counts["review_published"] == 2
    assert counts["accepted"] == 1 and counts["filtered_human_rejected"] == 1
    assert counts["generated"] == counts["accepted"] + sum(
        v for k, v in counts.items() if k.startswith("filtered_")
    )
    assert version.dataset == "tickets-reviewed" and list(version.parent_version_ids) == [seed_id]
    assert version.labels["review_backend"] == "argilla"
    assert version.labels["review_simulated"] == "false"
    synthetic = [r for r in rows if r["synthetic"] == "true"]
    assert [r["messages"][0]["content"] for r in synthetic] == [keep]
    assert synthetic[0]["reviewed_by"] == "annotator"
    assert synthetic[0]["messages"][1]["content"] == SCRIPT[keep]
    assert drop not in json.dumps(rows)
    # the raw decisions, with the annotator's username, never the owner's
    decisions = await asyncio.to_thread(owner.collect_reviews, review_dataset)
    assert sorted((d["record_id"], d["accepted"], d["annotator"]) for d in decisions) == sorted(
        [(records[keep][0], True, "annotator"), (records[drop][0], False, "annotator")]
    )
