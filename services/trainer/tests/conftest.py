"""Fixtures of the trainer tests: a real nats-server, the trainer started in-process by the
service kit on gRPC port 0, dataset versions written into the artifact store and announced the
way ingest announces them (``tw.ingest.dataset.curated``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.bus import Delivery, EventBus, event_meta
from tunewright.core.service import RunningService, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.v1 import registry_pb2
from tunewright.trainer.server import DEFINITION
from tunewright.trainer.settings import TrainerSettings
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the job's child process inherits it

KINDS = {
    "sft": common_pb2.DATASET_KIND_SFT,
    "preference": common_pb2.DATASET_KIND_PREFERENCE,
    "unpaired": common_pb2.DATASET_KIND_UNPAIRED,
    "prompt": common_pb2.DATASET_KIND_PROMPT,
}


def sft_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"add {a} and {b}"},
                    {"role": "assistant", "content": f"the sum is {a + b}"},
                ]
            }
        )
    return rows


def trainer_settings(nats_url: str, data_dir: Path, **trainer: Any) -> TrainerSettings:
    return load_settings(
        TrainerSettings,
        nats={"url": nats_url},
        grpc={"port": 0},
        data_dir=data_dir,
        trainer={
            "progress_interval_s": 0.2,
            "heartbeat_s": 0.3,
            "recovery_interval_s": 0.3,
            "orphan_after_s": 5.0,
            **trainer,
        },
    )


class Harness:
    """A trainer process (in-process) plus a client bus and a gRPC stub."""

    def __init__(self, nats_url: str, data_dir: Path) -> None:
        self.nats_url = nats_url
        self.data_dir = data_dir
        self.artifacts = LocalArtifactStore(data_dir / "artifacts")
        self.services: list[RunningService[TrainerSettings]] = []
        self.bus: EventBus | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start_worker(self, **trainer: Any) -> RunningService[TrainerSettings]:
        settings = trainer_settings(self.nats_url, self.data_dir, **trainer)
        running = await start_service(DEFINITION, settings)
        self.services.append(running)
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        return running

    @property
    def stub(self) -> trainer_pb2_grpc.TrainerServiceStub:
        assert self.channel is not None
        return trainer_pb2_grpc.TrainerServiceStub(self.channel)

    async def client(self) -> EventBus:
        if self.bus is None:
            self.bus = await EventBus.connect(self.nats_url, name="trainer-test")
            await self.bus.declare()
        return self.bus

    async def dataset(
        self,
        dataset_id: str,
        kind: str,
        train: Iterable[dict[str, Any]],
        eval_rows: Iterable[dict[str, Any]] | None = None,
    ) -> str:
        """Store the rows and announce the version like ingest does."""
        bus = await self.client()
        splits = {"train": list(train)}
        if eval_rows is not None:
            splits["eval"] = list(eval_rows)
        dv = registry_pb2.DatasetVersion(
            id=dataset_id, workspace="default", dataset=dataset_id, kind=KINDS[kind]
        )
        for name, rows in splits.items():
            data = "".join(json.dumps(r) + "\n" for r in rows).encode()
            ref = await self.artifacts.put_bytes(data, "application/jsonl")
            dv.splits[name].CopyFrom(
                common_pb2.ArtifactRef(
                    uri=ref.uri,
                    sha256=ref.sha256,
                    size_bytes=ref.size_bytes or 0,
                    media_type=ref.media_type,
                )
            )
        fact = events_pb2.IngestDatasetCurated(
            meta=event_meta(producer="test"), job_id=f"ingest-{dataset_id}", dataset_version=dv
        )
        await bus.publish(subjects.INGEST_DATASET_CURATED, fact, key=dataset_id)
        return dataset_id

    async def wait_for(
        self,
        job_id: str,
        done: Callable[[trainer_pb2.TrainingJob], bool],
        timeout_s: float = 90.0,
    ) -> trainer_pb2.TrainingJob:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            reply = await self.stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job_id))
            if done(reply.job):
                return reply.job
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"job {job_id} stuck: {reply.job}")
            await asyncio.sleep(0.2)

    async def facts(self, subject: str, *, expect: int = 0, timeout_s: float = 5.0) -> list[Any]:
        """The messages on ``subject`` so far, once at least ``expect`` have arrived."""
        bus = await self.client()
        sub = await bus.js.subscribe(subject, ordered_consumer=True)
        out: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=min(remaining, 0.5))
                except TimeoutError:
                    if len(out) >= expect:
                        break
                    continue
                out.append(Delivery.from_msg(msg, durable="").decode())
                if len(out) >= expect and msg.metadata.num_pending == 0:
                    break  # caught up with the stream
        finally:
            await sub.unsubscribe()
        return out

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        for running in self.services:
            await running.stop()
        if self.bus is not None:
            await self.bus.close()


@pytest.fixture
async def harness(nats_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(nats_url, tmp_path / "data")
    try:
        yield h
    finally:
        await h.close()


TERMINAL = (
    common_pb2.JOB_STATUS_SUCCEEDED,
    common_pb2.JOB_STATUS_FAILED,
    common_pb2.JOB_STATUS_CANCELLED,
)


def finished(job: trainer_pb2.TrainingJob) -> bool:
    return job.status in TERMINAL


def sft_spec(dataset_id: str, **changes: Any) -> trainer_pb2.TrainingJobSpec:
    spec = trainer_pb2.TrainingJobSpec(
        base_model="tiny:llama-xxs",
        method="sft",
        datasets=[common_pb2.DatasetVersionRef(id=dataset_id)],
        hyperparameters=trainer_pb2.Hyperparameters(
            max_steps=6, batch_size=4, max_length=64, learning_rate=5e-3
        ),
        peft=trainer_pb2.PeftConfig(type=trainer_pb2.PEFT_TYPE_LORA, r=8),
        seed=7,
        checkpoint_every_steps=3,
        output_model="support-assistant",
        resources=trainer_pb2.Resources(device="cpu"),
    )
    for name, value in changes.items():
        field = getattr(spec, name)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(spec, name, value)
    return spec
