"""Registry + trainer + evaluator: an SFT candidate trained on a tiny model is evaluated
against its untrained base on a held-out split (real generation, real metrics, paired
bootstrap CIs), the gate passes it, the registry records the evaluation, and the report
(HTML + PNGs) is in the artifact store. The same candidate against itself fails the gate."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.bus import EventBus, event_meta
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator.server import DEFINITION as EVALUATOR
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.trainer.server import DEFINITION as TRAINER
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")
ANSWERS = {
    "my order is late": "sorry, your order ships today",
    "the app crashes": "please update the app to the latest version",
    "I was charged twice": "a refund for the second charge is on its way",
}


def _rows(n: int, seed: int) -> list[dict]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = rng.choice(list(ANSWERS))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": ANSWERS[q]},
                ]
            }
        )
    return out


async def _jsonl(store: LocalArtifactStore, rows: list[dict]) -> common_pb2.ArtifactRef:  # type: ignore[type-arg]
    ref = await store.put_bytes(
        "".join(json.dumps(r) + "\n" for r in rows).encode(), "application/jsonl"
    )
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


async def _until(fetch, done, limit_s: float = 240):  # type: ignore[no-untyped-def]
    for _ in range(int(limit_s / 0.2)):
        value = await fetch()
        if done(value):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError("not done in time")


def _spec(candidate: str, baseline: evaluator_pb2.EvaluatedModel) -> evaluator_pb2.EvaluationSpec:
    return evaluator_pb2.EvaluationSpec(
        candidate=evaluator_pb2.EvaluatedModel(
            role="candidate", model=common_pb2.ModelVersionRef(id=candidate)
        ),
        baselines=[baseline],
        dataset=common_pb2.DatasetVersionRef(id="dv-qa"),
        metrics=[common_pb2.PluginRef(name="rouge_l"), common_pb2.PluginRef(name="token_f1")],
        generation=common_pb2.GenerationConfig(max_new_tokens=16, batch_size=8),
        gate=evaluator_pb2.GatePolicy(
            rules=[
                evaluator_pb2.GateRule(
                    metric="rouge_l", baseline=baseline.role, min_delta=0.05, ci_excludes_zero=True
                )
            ]
        ),
        bootstrap_samples=500,
        seed=1,
    )


async def test_sft_candidate_beats_its_base_and_the_gate_says_so(
    nats_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": data_dir}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    trainer = await start_service(TRAINER, load_settings(TRAINER.settings_cls, **common))
    evaluator = await start_service(
        EVALUATOR,
        load_settings(
            EVALUATOR.settings_cls,
            **common,
            evaluator={"registry_address": f"127.0.0.1:{registry.port}"},
        ),
    )
    bus = await EventBus.connect(nats_url, name="e2e-eval")
    try:
        store = LocalArtifactStore(data_dir / "artifacts")
        dv = registry_pb2.DatasetVersion(
            id="dv-qa",
            workspace="default",
            dataset="qa",
            content_hash="qa",
            kind=common_pb2.DATASET_KIND_SFT,
        )
        dv.splits["train"].CopyFrom(await _jsonl(store, _rows(48, 0)))
        dv.splits["eval"].CopyFrom(await _jsonl(store, _rows(30, 1)))
        await bus.publish(
            subjects.INGEST_DATASET_CURATED,
            events_pb2.IngestDatasetCurated(
                meta=event_meta(producer="test"), job_id="ingest-qa", dataset_version=dv
            ),
            key="dv-qa",
        )
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{trainer.port}") as tch,
            grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch,
            grpc.aio.insecure_channel(f"127.0.0.1:{evaluator.port}") as ech,
        ):
            tstub = trainer_pb2_grpc.TrainerServiceStub(tch)
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            estub = evaluator_pb2_grpc.EvaluatorServiceStub(ech)
            spec = trainer_pb2.TrainingJobSpec(
                base_model="tiny:llama-xxs", method="sft", output_model="support",
                datasets=[common_pb2.DatasetVersionRef(id="dv-qa")],
                # full fine-tuning: a randomly initialised tiny model learns little through LoRA alone
                peft=trainer_pb2.PeftConfig(type=trainer_pb2.PEFT_TYPE_NONE),
                hyperparameters=trainer_pb2.Hyperparameters(
                    max_steps=40, batch_size=8, max_length=48, learning_rate=2e-3, assistant_only_loss=True
                ),
                seed=1, resources=trainer_pb2.Resources(device="cpu"),
            )  # fmt: skip
            job = (
                await tstub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
            ).job
            job = await _until(
                lambda: tstub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.id)),
                lambda r: r.job.status >= common_pb2.JOB_STATUS_SUCCEEDED,
            )
            assert job.job.status == common_pb2.JOB_STATUS_SUCCEEDED, job.job.error
            candidate = job.job.model_version_id
            await _until(
                lambda: rstub.ListModelVersions(registry_pb2.ListModelVersionsRequest()),
                lambda r: any(m.id == candidate for m in r.model_versions),
            )

            base = evaluator_pb2.EvaluatedModel(role="base", base_model="tiny:llama-xxs")
            submitted = (
                await estub.SubmitEvaluationRun(
                    evaluator_pb2.SubmitEvaluationRunRequest(spec=_spec(candidate, base))
                )
            ).run
            run = (await _until(
                lambda: estub.GetEvaluationRun(evaluator_pb2.GetEvaluationRunRequest(run_id=submitted.id)),
                lambda r: r.run.status >= common_pb2.JOB_STATUS_SUCCEEDED,
            )).run  # fmt: skip
            assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, run.error
            rouge = next(c for c in run.comparisons if c.metric == "rouge_l")
            print(f"\nSFT vs base on 30 held-out samples: rouge_l {rouge.candidate_value:.3f} vs "
                  f"{rouge.baseline_value:.3f}, delta {rouge.delta:+.3f} [{rouge.ci_low:+.3f}, {rouge.ci_high:+.3f}]")  # fmt: skip
            report = json.loads(await store.get_bytes(ArtifactRef.from_uri(run.report_json.uri)))
            assert len(report["samples"]) == 30 and set(report["samples"][0]["outputs"]) == {
                "candidate",
                "base",
            }
            assert run.verdict.passed, list(run.verdict.reasons)
            assert rouge.ci_low > 0
            html = await store.get_bytes(ArtifactRef.from_uri(run.report_html.uri))
            assert b"PASSED" in html and b"data:image/png;base64," in html

            # the registry recorded it, so the candidate may now be promoted
            await _until(
                lambda: rstub.ListEvaluations(
                    registry_pb2.ListEvaluationsRequest(candidate_model_version_id=candidate)
                ),
                lambda r: len(r.evaluations) == 1,
            )
            promoted = await rstub.Promote(
                registry_pb2.PromoteRequest(model_version_id=candidate, alias="production")
            )
            assert promoted.evaluation_id == run.id

            # the candidate against itself: identical outputs, CI [0, 0], the gate refuses
            same = evaluator_pb2.EvaluatedModel(
                role="production", model=common_pb2.ModelVersionRef(id=candidate)
            )
            again = (
                await estub.SubmitEvaluationRun(
                    evaluator_pb2.SubmitEvaluationRunRequest(spec=_spec(candidate, same))
                )
            ).run
            again = (await _until(
                lambda: estub.GetEvaluationRun(evaluator_pb2.GetEvaluationRunRequest(run_id=again.id)),
                lambda r: r.run.status >= common_pb2.JOB_STATUS_SUCCEEDED,
            )).run  # fmt: skip
            assert not again.verdict.passed
            assert "95% CI includes 0" in again.verdict.reasons[0]
    finally:
        await bus.close()
        for running in (evaluator, trainer, registry):
            await running.stop()
