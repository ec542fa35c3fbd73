"""Trainer + registry: an SFT job, then DPO on the SFT model, each registered by the registry
from the trainer's ``tw.trainer.job.succeeded`` fact alone (no registry call from the trainer),
with lineage: base model, datasets, parent, chat template and EOS."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.bus import EventBus, event_meta
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.trainer.server import DEFINITION as TRAINER
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training child process inherits it


async def _announce(
    bus: EventBus, store: LocalArtifactStore, dataset_id: str, kind: int, rows: list[dict]
) -> None:
    ref = await store.put_bytes(
        "".join(json.dumps(r) + "\n" for r in rows).encode(), "application/jsonl"
    )
    dv = registry_pb2.DatasetVersion(
        id=dataset_id, workspace="default", dataset=dataset_id, kind=kind
    )
    dv.splits["train"].CopyFrom(
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


async def _wait(stub: trainer_pb2_grpc.TrainerServiceStub, job_id: str) -> trainer_pb2.TrainingJob:
    for _ in range(600):
        job = (await stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job_id))).job
        if job.status >= common_pb2.JOB_STATUS_SUCCEEDED:
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


async def _model_version(
    stub: registry_pb2_grpc.RegistryServiceStub, mv_id: str
) -> registry_pb2.ModelVersion:
    for _ in range(100):
        try:
            reply = await stub.GetModelVersion(
                registry_pb2.GetModelVersionRequest(ref=common_pb2.ModelVersionRef(id=mv_id))
            )
            return reply.model_version
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"model version {mv_id} never registered")


async def test_sft_then_dpo_are_registered_with_lineage(nats_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": data_dir}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    trainer = await start_service(TRAINER, load_settings(TRAINER.settings_cls, **common))
    bus = await EventBus.connect(nats_url, name="e2e-training")
    try:
        store = LocalArtifactStore(data_dir / "artifacts")
        rng = random.Random(0)
        complaints = ["my order is late", "the app crashes", "I was charged twice"]
        sft_rows = [
            {"messages": [{"role": "user", "content": rng.choice(complaints)},
                          {"role": "assistant", "content": "sorry, a refund is on its way"}]}
            for _ in range(24)
        ]  # fmt: skip
        pairs = [
            {"prompt": rng.choice(complaints), "chosen": "sorry, a refund is on its way",
             "rejected": "not our problem"}
            for _ in range(24)
        ]  # fmt: skip
        await _announce(bus, store, "dv-chat", common_pb2.DATASET_KIND_SFT, sft_rows)
        await _announce(bus, store, "dv-prefs", common_pb2.DATASET_KIND_PREFERENCE, pairs)

        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{trainer.port}") as tch,
            grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch,
        ):
            tstub = trainer_pb2_grpc.TrainerServiceStub(tch)
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            hp = trainer_pb2.Hyperparameters(max_steps=4, batch_size=4, max_length=48)
            sft = trainer_pb2.TrainingJobSpec(
                base_model="tiny:llama-xxs", method="sft", output_model="support",
                datasets=[common_pb2.DatasetVersionRef(id="dv-chat")], hyperparameters=hp,
                seed=1, resources=trainer_pb2.Resources(device="cpu"),
            )  # fmt: skip
            reply = await tstub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=sft))
            sft_job = await _wait(tstub, reply.job.id)
            assert sft_job.status == common_pb2.JOB_STATUS_SUCCEEDED, sft_job.error
            sft_mv = await _model_version(rstub, sft_job.model_version_id)
            assert (sft_mv.model, sft_mv.version, sft_mv.method) == ("support", 1, "sft")
            assert sft_mv.base_model == "tiny:llama-xxs"
            assert list(sft_mv.dataset_version_ids) == ["dv-chat"]
            assert sft_mv.eos_token == "<|im_end|>" and "<|im_end|>" in sft_mv.chat_template
            assert sft_mv.weights.sha256 == sft_job.output.sha256

            dpo = trainer_pb2.TrainingJobSpec(
                base_model="tiny:llama-xxs", method="dpo", output_model="support",
                parent_model=common_pb2.ModelVersionRef(id=sft_mv.id),
                datasets=[common_pb2.DatasetVersionRef(id="dv-prefs")], hyperparameters=hp,
                seed=1, resources=trainer_pb2.Resources(device="cpu"),
            )  # fmt: skip
            reply = await tstub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=dpo))
            dpo_job = await _wait(tstub, reply.job.id)
            assert dpo_job.status == common_pb2.JOB_STATUS_SUCCEEDED, dpo_job.error
            dpo_mv = await _model_version(rstub, dpo_job.model_version_id)
            assert (dpo_mv.version, dpo_mv.method) == (2, "dpo")
            assert dpo_mv.parent_model_version_id == sft_mv.id
            assert list(dpo_mv.dataset_version_ids) == ["dv-prefs"]
    finally:
        await bus.close()
        await trainer.stop()
        await registry.stop()
