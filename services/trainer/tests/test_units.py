"""Domain pieces without NATS or training: claims, spec conversion, memory estimate, rows."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewright.core.settings import load_settings
from tunewright.trainer import convert
from tunewright.trainer.child import read_rows, texts
from tunewright.trainer.jobs import Job, JobStatus
from tunewright.trainer.preflight import _resolve_peft, estimate_memory, memory_estimate
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
    # published peaks for an 8B Llama (see estimate_memory): full fine-tuning with AdamW in
    # mixed precision needs 16 bytes per parameter, LoRA on a bf16 base 20-30 GiB, QLoRA a
    # 16-24 GB card
    assert 110 * 2**30 < full < 160 * 2**30
    assert 16 * 2**30 < lora < 30 * 2**30
    assert 5 * 2**30 < qlora < 12 * 2**30
    # activations grow with the batch; QLoRA checkpoints by default, so they stay small
    parts = memory_estimate(params, hp, _resolve_peft({}), {"bits": 4})
    longer = memory_estimate(params, {**hp, "batch_size": 4}, _resolve_peft({}), {"bits": 4})
    assert longer.activations == pytest.approx(4 * parts.activations, rel=1e-6)
    assert longer.total - parts.total == pytest.approx(3 * parts.activations, rel=1e-6)


def test_memory_estimate_follows_checkpointing_precision_and_device() -> None:
    params, peft = 8_000_000_000, _resolve_peft({})
    hp = {"batch_size": 4, "max_length": 2048}
    qlora = memory_estimate(params, hp, peft, {"bits": 4})
    no_checkpoints = memory_estimate(
        params, {**hp, "gradient_checkpointing": False}, peft, {"bits": 4}
    )
    assert no_checkpoints.activations > 5 * qlora.activations
    lora = memory_estimate(params, hp, peft, {})  # no quantization: no checkpointing by default
    assert lora.activations == no_checkpoints.activations
    assert memory_estimate(
        params, {**hp, "gradient_checkpointing": True}, peft, {}
    ).activations == (qlora.activations)
    # fp32 (the CPU default, or asked for) doubles the frozen weights and the activations
    fp32 = memory_estimate(params, hp, peft, {}, device="cpu")
    assert fp32.weights == 2 * lora.weights
    assert fp32.activations == pytest.approx(2 * lora.activations, rel=0.01)
    assert fp32.overhead == 0 < lora.overhead
    assert memory_estimate(params, {**hp, "precision": "fp32"}, peft, {}).weights == fp32.weights
    # eager attention materialises the scores; a preference pair runs two sequences
    eager = memory_estimate(params, {**hp, "attn_implementation": "eager"}, peft, {"bits": 4})
    assert eager.activations > qlora.activations
    pairs = memory_estimate(params, hp, peft, {"bits": 4}, sequences_per_example=2)
    assert pairs.activations == pytest.approx(2 * qlora.activations, rel=1e-6)


def test_rows_read_from_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [{"prompt": "p1", "chosen": "c1", "rejected": "r1"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    assert read_rows(tmp_path / "a.jsonl") == rows == read_rows(tmp_path / "a.parquet")
    nested = [{"messages": [{"role": "user", "content": "hi"}]}]
    assert set(texts(nested)) == {"user", "hi"}


def test_a_job_on_a_parent_takes_its_base_model_and_seed_unless_it_sets_them() -> None:
    from tunewright.trainer.convert import with_parent_defaults
    from tunewright.trainer.jobs import JobSpec
    from tunewright.trainer.v1 import trainer_pb2

    parent = JobSpec(workspace="w", base_model="tiny:llama-xs", method="sft", dataset_ids=("d",),
                     seed=7)  # fmt: skip
    child = trainer_pb2.TrainingJobSpec(method="dpo")
    child.parent_model.id = "mv-1"
    resolved = with_parent_defaults(child, parent)
    assert resolved.base_model == "tiny:llama-xs" and resolved.seed == 7
    assert resolved.HasField("seed") and not child.base_model  # a copy; the request is kept
    # seed 0 is a real value: only an unset seed is inherited
    explicit = trainer_pb2.TrainingJobSpec(method="dpo", base_model="tiny:llama-s", seed=0)
    explicit.parent_model.id = "mv-1"
    kept = with_parent_defaults(explicit, parent)
    assert kept.base_model == "tiny:llama-s" and kept.seed == 0
    assert with_parent_defaults(child, None) is child  # unknown parent: pre-flight says so
