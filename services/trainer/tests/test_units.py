"""Domain pieces without NATS or training: claims, spec conversion, memory estimate, rows."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tunewright.core.settings import load_settings
from tunewright.trainer import convert
from tunewright.trainer.child import read_rows, texts
from tunewright.trainer.jobs import Job, JobStatus
from tunewright.trainer.preflight import _resolve_peft, estimate_memory
from tunewright.trainer.runner import Worker, worker_alive
from tunewright.trainer.settings import TrainerSettings
from tunewright.trainer.store import JobStore
from tunewright.trainer.v1 import trainer_pb2


def _job(store: JobStore, job_id: str = "job-1") -> Job:
    spec = trainer_pb2.TrainingJobSpec(base_model="tiny:llama-xxs", method="sft")
    job = Job(
        id=job_id,
        spec=convert.spec_from_pb(spec),
        spec_bytes=spec.SerializeToString(),
        status=JobStatus.QUEUED,
        created_at=time.time(),
    )
    created, _ = store.create(job, request_id="req-1")
    return created


def _worker(store: JobStore, tmp_path: Path, worker_id: str) -> Worker:
    settings = load_settings(TrainerSettings, data_dir=tmp_path)
    return Worker(
        settings=settings,
        store=store,
        artifacts=None,  # type: ignore[arg-type]
        plugins=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
        datasets=None,  # type: ignore[arg-type]
        worker_id=worker_id,
    )


def test_only_one_worker_claims_a_job_until_its_worker_is_gone(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    _job(store)
    alive = f"{socket.gethostname()}.{os.getpid()}.aaaaaa"
    a = _worker(store, tmp_path, alive)
    b = _worker(JobStore(tmp_path / "jobs.db"), tmp_path, "otherhost.1.bbbbbb")
    assert a._claim("job-1") is not None
    assert b._claim("job-1") is None  # held by a live worker
    assert store.get("job-1").attempt == 1

    # a dead worker on this host (its pid is gone) frees the job at once
    host = socket.gethostname()
    store.update("job-1", lambda j: setattr(j, "worker_id", f"{host}.999999999.c"))
    assert not worker_alive(store.get("job-1"), now=time.time(), orphan_after_s=30)
    claimed = b._claim("job-1")
    assert claimed is not None and claimed[0].attempt == 2
    # a finished job is never claimed again
    store.update("job-1", lambda j: setattr(j, "status", JobStatus.SUCCEEDED))
    assert a._claim("job-1") is None


def test_same_request_id_is_the_same_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    first = _job(store, "job-1")
    again, created = store.create(
        Job(
            id="job-2",
            spec=first.spec,
            spec_bytes=first.spec_bytes,
            status=JobStatus.QUEUED,
            created_at=time.time(),
        ),
        request_id="req-1",
    )
    assert not created and again.id == "job-1"


def test_spec_conversion_keeps_only_what_was_set() -> None:
    pb = trainer_pb2.TrainingJobSpec(
        base_model="hf:/models/x",
        method="dpo",
        hyperparameters=trainer_pb2.Hyperparameters(max_steps=10, learning_rate=0.0),
        peft=trainer_pb2.PeftConfig(type=trainer_pb2.PEFT_TYPE_LORA, r=4),
        quantization=trainer_pb2.QuantizationConfig(bits=trainer_pb2.QUANTIZATION_BITS_4),
    )
    pb.method_config.update({"beta": 0.2})
    spec = convert.spec_from_pb(pb)
    assert spec.hyperparameters == {"max_steps": 10, "learning_rate": 0.0}  # 0 is a real value
    assert spec.peft == {"type": "lora", "r": 4}
    assert spec.quantization["bits"] == 4 and spec.quantization["quant_type"] == "nf4"
    assert spec.method_config == {"beta": 0.2}
    assert _resolve_peft(spec.peft) == {
        "type": "lora",
        "r": 4,
        "alpha": 8.0,
        "dropout": 0.05,
        "target_modules": [],
    }


def test_memory_estimate_orders_full_lora_and_qlora() -> None:
    hp = {"batch_size": 1, "max_length": 512}
    params = 8_000_000_000  # Llama-3-8B-like
    full = estimate_memory(params, hp, {"type": "none"}, {})
    lora = estimate_memory(params, hp, _resolve_peft({}), {})
    qlora = estimate_memory(params, hp, _resolve_peft({}), {"bits": 4})
    assert full > lora > qlora
    assert 150 * 2**30 < full < 250 * 2**30  # ~20 bytes per parameter
    assert 5 * 2**30 < qlora < 16 * 2**30  # QLoRA 8B fits a 16-24 GB card at this size
    longer = estimate_memory(params, {**hp, "batch_size": 4}, _resolve_peft({}), {"bits": 4})
    assert longer > 3 * qlora - 2 * 5 * 2**30


def test_rows_read_from_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [{"prompt": "p1", "chosen": "c1", "rejected": "r1"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    assert read_rows(tmp_path / "a.jsonl") == rows == read_rows(tmp_path / "a.parquet")
    nested = [{"messages": [{"role": "user", "content": "hi"}]}]
    assert set(texts(nested)) == {"user", "hi"}
