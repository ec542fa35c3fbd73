"""Small builders for the facts and records the registry tests feed in."""

from __future__ import annotations

from tunewright.common.v1 import common_pb2
from tunewright.core.bus import event_meta
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.events.v1 import events_pb2
from tunewright.registry.v1 import registry_pb2
from tunewright.trainer.v1 import trainer_pb2


def artifact(name: str) -> common_pb2.ArtifactRef:
    digest = (name.encode().hex() * 64)[:64]
    return common_pb2.ArtifactRef(uri=f"tw-artifact:sha256:{digest}", sha256=digest, size_bytes=10)


def dataset_version(
    dv_id: str,
    *,
    dataset: str = "tickets",
    kind: int = common_pb2.DATASET_KIND_SFT,
    parents: tuple[str, ...] = (),
) -> registry_pb2.DatasetVersion:
    return registry_pb2.DatasetVersion(
        id=dv_id,
        workspace="default",
        dataset=dataset,
        content_hash=f"hash-{dv_id}",
        kind=kind,
        splits={"train": artifact(f"{dv_id}-train"), "eval": artifact(f"{dv_id}-eval")},
        counts=registry_pb2.RowCounts(
            total=10, accepted=8, quarantined=1, duplicates=1, train=7, eval=1
        ),
        curation_report=artifact(f"{dv_id}-report"),
        pii_audit=artifact(f"{dv_id}-pii"),
        parent_version_ids=list(parents),
    )


def curated(job_id: str, dv: registry_pb2.DatasetVersion) -> events_pb2.IngestDatasetCurated:
    return events_pb2.IngestDatasetCurated(
        meta=event_meta(producer="test-ingest", workspace="default"),
        job_id=job_id,
        dataset_version=dv,
    )


def trainer_succeeded(
    job_id: str,
    *,
    model_version_id: str,
    method: str,
    datasets: list[str],
    parent: str = "",
    base_model: str = "tiny:llama-xs",
) -> events_pb2.TrainerJobSucceeded:
    spec = trainer_pb2.TrainingJobSpec(
        workspace="default",
        method=method,
        base_model="" if parent else base_model,
        datasets=[common_pb2.DatasetVersionRef(id=d) for d in datasets],
        output_model="support-bot",
        seed=7,
    )
    if parent:
        spec.parent_model.id = parent
    return events_pb2.TrainerJobSucceeded(
        meta=event_meta(producer="test-trainer", workspace="default"),
        job_id=job_id,
        spec=spec,
        model_version=registry_pb2.ModelVersion(
            id=model_version_id,
            weights=artifact(f"{model_version_id}-adapter"),
            chat_template="{{ chatml }}",
            eos_token="<|im_end|>",
        ),
        metrics={"train_loss": 1.25},
        checkpoints=[trainer_pb2.Checkpoint(step=10, artifact=artifact(f"{job_id}-ckpt10"))],
        code_version="0.1.0",
    )


def evaluation_run(
    run_id: str, candidate: str, *, baseline: str = "", passed: bool = True
) -> evaluator_pb2.EvaluationRun:
    spec = evaluator_pb2.EvaluationSpec(
        workspace="default",
        candidate=evaluator_pb2.EvaluatedModel(
            role="candidate", model=common_pb2.ModelVersionRef(id=candidate)
        ),
    )
    if baseline:
        spec.baselines.append(
            evaluator_pb2.EvaluatedModel(
                role="production", model=common_pb2.ModelVersionRef(id=baseline)
            )
        )
    else:
        spec.baselines.append(evaluator_pb2.EvaluatedModel(role="base", base_model="tiny:llama-xs"))
    return evaluator_pb2.EvaluationRun(
        id=run_id,
        workspace="default",
        spec=spec,
        status=common_pb2.JOB_STATUS_SUCCEEDED,
        comparisons=[
            evaluator_pb2.Comparison(
                metric="rougeL", baseline="base", delta=0.1, ci_low=0.05, ci_high=0.15
            )
        ],
        verdict=evaluator_pb2.GateVerdict(passed=passed, reasons=["rougeL +0.10 [0.05, 0.15]"]),
    )


def evaluation_completed(run: evaluator_pb2.EvaluationRun) -> events_pb2.EvaluatorRunCompleted:
    return events_pb2.EvaluatorRunCompleted(
        meta=event_meta(producer="test-evaluator", workspace="default"), run=run
    )
