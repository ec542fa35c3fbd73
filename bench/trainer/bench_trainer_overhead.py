"""Trainer overhead: the same SFT job through the trainer service and as a bare TRL script.

    OMP_NUM_THREADS=1 .venv/bin/python bench/trainer/bench_trainer_overhead.py [--steps 100]

Both runs train ``tiny:<preset>`` with LoRA on the same rows, seed, hyperparameters and
checkpoint interval. The service run is timed from SubmitTrainingJob to SUCCEEDED (work queue,
child process start, dataset download, checkpoint uploads, events, output upload); the bare
run is timed from starting ``python`` on a plain SFTTrainer script to its exit (same imports,
same model construction). Prints one JSON object: wall seconds of both, their ratio (service /
bare), and training tokens/s of both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.bus import EventBus, event_meta
from tunewright.core.nats_server import NatsServer
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.v1 import registry_pb2
from tunewright.trainer.server import DEFINITION
from tunewright.trainer.settings import TrainerSettings
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

BARE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from trl import SFTConfig, SFTTrainer
    from peft import LoraConfig
    from datasets import Dataset
    from tunewright_trl.models import TinyBaseModel

    cfg = json.loads(sys.argv[1])
    rows = [json.loads(line) for line in open(cfg["data"])]
    corpus = sorted({c["content"] for r in rows for c in r["messages"]} | {"user", "assistant"})
    base = TinyBaseModel(cfg["preset"], corpus=corpus, seed=cfg["seed"])
    tok = base.tokenizer()
    args = SFTConfig(
        output_dir=cfg["out"], max_steps=cfg["steps"], per_device_train_batch_size=cfg["batch"],
        learning_rate=cfg["lr"], max_length=cfg["max_length"], seed=cfg["seed"],
        data_seed=cfg["seed"], logging_steps=1, save_strategy="steps",
        save_steps=cfg["every"], report_to=[], disable_tqdm=True, bf16=False, use_cpu=True,
        activation_checkpointing=False, eos_token=tok.eos_token,
    )
    trainer = SFTTrainer(
        model=base.causal_lm(), args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05,
                               target_modules="all-linear"),
    )
    result = trainer.train()
    trainer.save_model(cfg["out"] + "/model")
    tok.save_pretrained(cfg["out"] + "/tokenizer")
    tokens = max(e.get("num_tokens", 0) for e in trainer.state.log_history)
    print(json.dumps({"tokens": tokens, "train_runtime": result.metrics["train_runtime"]}))
    """
)


def rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"what is {a} plus {b}?"},
                    {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
                ]
            }
        )
    return out


async def through_service(tmp: Path, data: list[dict[str, Any]], a: argparse.Namespace) -> dict:
    with NatsServer(tmp / "nats") as nats:
        settings = load_settings(
            TrainerSettings, nats={"url": nats.url}, grpc={"port": 0}, data_dir=tmp / "svc"
        )
        running = await start_service(DEFINITION, settings)
        bus = await EventBus.connect(nats.url, name="bench")
        try:
            store = LocalArtifactStore(settings.artifacts_root)
            ref = await store.put_bytes(
                "".join(json.dumps(r) + "\n" for r in data).encode(), "application/jsonl"
            )
            dv = registry_pb2.DatasetVersion(id="bench", kind=common_pb2.DATASET_KIND_SFT)
            dv.splits["train"].CopyFrom(
                common_pb2.ArtifactRef(
                    uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0,
                    media_type=ref.media_type,
                )
            )  # fmt: skip
            await bus.publish(
                subjects.INGEST_DATASET_CURATED,
                events_pb2.IngestDatasetCurated(meta=event_meta(producer="bench"),
                                                dataset_version=dv),
                key="bench",
            )  # fmt: skip
            spec = trainer_pb2.TrainingJobSpec(
                base_model=f"tiny:{a.preset}",
                method="sft",
                datasets=[common_pb2.DatasetVersionRef(id="bench")],
                hyperparameters=trainer_pb2.Hyperparameters(
                    max_steps=a.steps, batch_size=a.batch, max_length=a.max_length,
                    learning_rate=a.lr,
                ),
                peft=trainer_pb2.PeftConfig(type=trainer_pb2.PEFT_TYPE_LORA, r=16, alpha=32),
                seed=0,
                checkpoint_every_steps=a.every,
                resources=trainer_pb2.Resources(device="cpu"),
            )  # fmt: skip
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = trainer_pb2_grpc.TrainerServiceStub(channel)
                started = time.perf_counter()
                reply = await stub.SubmitTrainingJob(
                    trainer_pb2.SubmitTrainingJobRequest(spec=spec)
                )
                while True:
                    job = (
                        await stub.GetTrainingJob(
                            trainer_pb2.GetTrainingJobRequest(job_id=reply.job.id)
                        )
                    ).job
                    if job.status >= common_pb2.JOB_STATUS_SUCCEEDED:
                        break
                    await asyncio.sleep(0.05)
                wall = time.perf_counter() - started
            if job.status != common_pb2.JOB_STATUS_SUCCEEDED:
                raise SystemExit(f"service job failed: {job.error}")
            return {
                "wall_s": wall,
                "tokens": job.progress.metrics["num_tokens"],
                "train_runtime_s": job.final_metrics["train_runtime"],
            }
        finally:
            await bus.close()
            await running.stop()


def bare(tmp: Path, data: list[dict[str, Any]], a: argparse.Namespace) -> dict:
    path = tmp / "bare.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    cfg = {
        "data": str(path), "out": str(tmp / "bare"), "preset": a.preset, "seed": 0,
        "steps": a.steps, "batch": a.batch, "lr": a.lr, "max_length": a.max_length,
        "every": a.every,
    }  # fmt: skip
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", BARE_SCRIPT, json.dumps(cfg)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    wall = time.perf_counter() - started
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "tokens": result["tokens"], "train_runtime_s": result["train_runtime"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llama-s")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--every", type=int, default=50)
    a = parser.parse_args()
    data = rows(a.rows)
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        bare_run = bare(tmp, data, a)
        service_run = asyncio.run(through_service(tmp, data, a))
    report = {
        "job": {k: getattr(a, k) for k in ("preset", "rows", "steps", "batch", "max_length")},
        "service_wall_s": round(service_run["wall_s"], 2),
        "bare_wall_s": round(bare_run["wall_s"], 2),
        "wall_ratio": round(service_run["wall_s"] / bare_run["wall_s"], 3),
        "service_tokens_per_s": round(service_run["tokens"] / service_run["wall_s"], 1),
        "bare_tokens_per_s": round(bare_run["tokens"] / bare_run["wall_s"], 1),
        "service_train_tokens_per_s": round(
            service_run["tokens"] / service_run["train_runtime_s"], 1
        ),
        "bare_train_tokens_per_s": round(bare_run["tokens"] / bare_run["train_runtime_s"], 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
