"""Synthetic examples end to end, with the real services in one process: registry, ingest
(presidio PII scrub, dedup, filters, split) and synth, over real NATS and real gRPC.

A seed dataset is curated by ingest; a synth job submitted over gRPC asks the
``openai-compatible`` generator plugin (a real HTTP endpoint on port 0, answering from the
scripted generator so the test knows each row's fate) for rows in the thin categories. The
rows that duplicate existing ones are filtered; the rest are flagged synthetic, go through
ingest by event, and come out PII-scrubbed in a new dataset version whose parent is the seed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.bus import decode_event
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.core.splits import read_split_rows
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.synth.server import DEFINITION as SYNTH
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc

from .conftest import seed_rows

DUPLICATE = "How do I reset my password when the reset email never arrives?"


async def _curate_seed(channel: Any, artifacts: LocalArtifactStore) -> str:
    body = "".join(json.dumps(r) + "\n" for r in seed_rows()).encode()
    ref = await artifacts.put_bytes(body, "application/jsonl")
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    job = (
        await stub.SubmitIngestJob(
            ingest_pb2.SubmitIngestJobRequest(
                spec=ingest_pb2.IngestSpec(
                    dataset="tickets",
                    source=common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256),
                    split=ingest_pb2.SplitSpec(eval_fraction=0.2, seed=1, stratify_by="category"),
                )
            )
        )
    ).job
    for _ in range(600):
        job = (await stub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=job.id))).job
        if job.status >= common_pb2.JOB_STATUS_SUCCEEDED:
            break
        await asyncio.sleep(0.1)
    assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.error
    return job.dataset_version_id


async def _rows(artifacts: LocalArtifactStore, version: registry_pb2.DatasetVersion) -> list[dict]:
    rows = []
    for split in ("train", "eval"):
        ref = version.splits[split]
        rows += read_split_rows(
            await artifacts.get_bytes(ArtifactRef.from_uri(ref.uri)), ref.media_type
        )
    return rows


async def _split_rows(
    artifacts: LocalArtifactStore, version: registry_pb2.DatasetVersion, split: str
) -> list[dict]:
    ref = version.splits[split]
    return read_split_rows(await artifacts.get_bytes(ArtifactRef.from_uri(ref.uri)), ref.media_type)


async def test_synthetic_rows_are_filtered_flagged_and_scrubbed_through_ingest(
    nats_url: str, tmp_path: Path, scripted_chat_server: Any
) -> None:
    common: dict[str, Any] = {
        "nats": {"url": nats_url},
        "grpc": {"port": 0},
        "data_dir": tmp_path / "data",
    }
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    services = [registry]
    try:
        ingest = await start_service(INGEST, load_settings(INGEST.settings_cls, **common))
        services.append(ingest)
        synth = await start_service(
            SYNTH,
            load_settings(
                SYNTH.settings_cls,
                **common,
                synth={"registry_address": f"127.0.0.1:{registry.port}"},
            ),
        )
        services.append(synth)
        artifacts = LocalArtifactStore(ingest.context.settings.artifacts_root)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{ingest.port}") as ich,
            grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch,
            grpc.aio.insecure_channel(f"127.0.0.1:{synth.port}") as sch,
        ):
            seed_id = await _curate_seed(ich, artifacts)
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            for _ in range(100):  # the registry records the curated fact asynchronously
                try:
                    await rstub.GetDatasetVersion(
                        registry_pb2.GetDatasetVersionRequest(
                            ref=common_pb2.DatasetVersionRef(id=seed_id)
                        )
                    )
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)

            spec = synth_pb2.SynthJobSpec(
                synthetic_examples=synth_pb2.SyntheticExamplesTask(
                    seed_dataset=common_pb2.DatasetVersionRef(id=seed_id),
                    generator=common_pb2.PluginRef(name="openai-compatible"),
                    num_examples=10,
                    max_synthetic_share=0.5,
                    output_dataset="tickets-augmented",
                ),
                seed=3,
            )
            spec.synthetic_examples.generator.params.update(
                {"base_url": scripted_chat_server.base_url, "model": "scripted"}
            )
            for name in ("minhash", "length", "quality"):
                spec.synthetic_examples.filters.add(name=name)
            sstub = synth_pb2_grpc.SynthServiceStub(sch)
            job = (
                await sstub.SubmitSynthJob(
                    synth_pb2.SubmitSynthJobRequest(spec=spec, request_id="augment-1")
                )
            ).job
            assert job.status == common_pb2.JOB_STATUS_QUEUED
            again = await sstub.SubmitSynthJob(
                synth_pb2.SubmitSynthJobRequest(spec=spec, request_id="augment-1")
            )
            assert again.job.id == job.id  # idempotent by request id

            events = [
                r.event
                async for r in sstub.StreamSynthJobEvents(
                    synth_pb2.StreamSynthJobEventsRequest(job_id=job.id)
                )
            ]
            statuses = [e.status for e in events if e.kind == common_pb2.EVENT_KIND_STATUS]
            assert statuses == [common_pb2.JOB_STATUS_RUNNING, common_pb2.JOB_STATUS_SUCCEEDED]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            job = (await sstub.GetSynthJob(synth_pb2.GetSynthJobRequest(job_id=job.id))).job
            assert job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.error
            counts = dict(job.counts)
            assert counts["generated"] == 10 and counts["accepted"] == 5
            assert counts["filtered_near_duplicate_existing"] == 1
            assert counts["filtered_near_duplicate_generated"] == 2
            assert counts["generated"] == counts["accepted"] + sum(
                v for k, v in counts.items() if k.startswith("filtered_")
            )
            assert job.ingest_job_id == f"{job.id}-ingest" and job.report.uri
            listed = await sstub.ListSynthJobs(synth_pb2.ListSynthJobsRequest())
            assert [j.id for j in listed.jobs] == [job.id]

            version = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(id=job.dataset_version_id)
                    )
                )
            ).dataset_version
            assert version.dataset == "tickets-augmented"
            assert list(version.parent_version_ids) == [seed_id]
            assert version.source == registry_pb2.DATASET_SOURCE_SYNTHETIC
            assert version.labels["synth_job_id"] == job.id
            rows = await _rows(artifacts, version)
            seed_version = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(id=seed_id)
                    )
                )
            ).dataset_version
            seed_eval = await _split_rows(artifacts, seed_version, "eval")
            new_eval = await _split_rows(artifacts, version, "eval")
            new_train = await _split_rows(artifacts, version, "train")

        # the parent's eval split is the new eval split, row for row; synthetic rows train only
        assert seed_eval and [r["messages"] for r in new_eval] == [r["messages"] for r in seed_eval]
        assert all(r["synthetic"] == "false" for r in new_eval)
        assert sum(r["synthetic"] == "true" for r in new_train) == 5
        assert {r["split_pin"] for r in new_train} == {"train"}
        # no held-out request was shown to the generator
        shown = " ".join(
            m["content"] for request in scripted_chat_server.requests for m in request["messages"]
        )
        for row in seed_eval:
            assert row["messages"][0]["content"] not in shown

        synthetic = [r for r in rows if r["synthetic"] == "true"]
        assert len(synthetic) == counts["ingest_accepted"] - counts["seed_rows"] == 5
        texts = json.dumps(rows)
        assert "jane.doe@example.com" not in texts and "212-555-0147" not in texts
        (pii_row,) = [r for r in synthetic if "<EMAIL_ADDRESS>" in r["messages"][0]["content"]]
        assert "<PHONE_NUMBER>" in pii_row["messages"][0]["content"]
        assert pii_row["category"] == "login" and pii_row["synth_job_id"] == job.id
        assert pii_row["synthetic_generator"] == "openai-compatible:scripted"
        assert json.loads(pii_row["synthetic_prompt"])[0]["role"] == "system"
        # the duplicated seed request is there once: the seed row, not a synthetic copy
        (dup,) = [r for r in rows if r["messages"][0]["content"] == DUPLICATE]
        assert dup["synthetic"] == "false"

        # the fact the registry and pipelines consume
        nc = synth.context.bus
        sub = await nc.js.subscribe(subjects.SYNTH_DATASET_GENERATED, ordered_consumer=True)
        msg = await sub.next_msg(timeout=5)
        fact = decode_event(msg.headers["Tw-Event-Type"], msg.data)
        await sub.unsubscribe()
        assert fact.job_id == job.id and fact.dataset_version.id == version.id
        assert fact.counts["accepted"] == 5 and fact.ingest_job_id == job.ingest_job_id
        assert "jane" not in msg.data.decode(errors="ignore")  # no row text in events
    finally:
        for running in reversed(services):
            await running.stop()
