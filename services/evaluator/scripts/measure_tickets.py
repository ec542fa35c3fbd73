"""Measure an SFT candidate against its untrained base on held-out support tickets.

Starts its own nats-server, registry, trainer and evaluator (gRPC on port 0, data in a temp
folder), registers the example tickets (examples/support-tickets/ticketgen.py) as a dataset
version with a held-out split and preference pairs as a second one, trains SFT on
``tiny:llama-xxs`` (full fine-tuning) and evaluates it against the base twice: generation
metrics with perplexity and the smoke test on the tickets, preference accuracy (and
perplexity of the chosen answers) on the pairs. Prints every value and delta with its 95% CI
and writes the reports to OUT. The numbers in ../README.md ("Measured") come from::

    OMP_NUM_THREADS=1 python services/evaluator/scripts/measure_tickets.py /tmp/m1 \\
        --max-length 128 --steps 60 --max-new-tokens 64            # the demo's settings
    OMP_NUM_THREADS=1 python services/evaluator/scripts/measure_tickets.py /tmp/m2 \\
        --max-length 448 --steps 150 --max-new-tokens 256 --max-samples 40
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.bus import EventBus, event_meta
from tunewright.core.nats_server import NatsServer
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator.server import DEFINITION as EVALUATOR
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunewright.events.v1 import events_pb2
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.trainer.server import DEFINITION as TRAINER
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]


def _ticketgen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "ticketgen", ROOT / "examples" / "support-tickets" / "ticketgen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ticketgen"] = module
    spec.loader.exec_module(module)
    return module


async def _until(fetch: Any, done: Any, limit_s: float = 1800) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = await fetch()
        if done(value):
            return value
        await asyncio.sleep(0.5)
    raise TimeoutError("not done in time")


async def _split(store: LocalArtifactStore, rows: list[dict[str, Any]]) -> common_pb2.ArtifactRef:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    ref = await store.put_bytes(data, "application/jsonl")
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


def _print_run(name: str, run: evaluator_pb2.EvaluationRun, seconds: float) -> None:
    verdict = "PASSED" if run.verdict.passed else "FAILED"
    print(f"\n== {name} ({seconds:.0f} s): {verdict}: {'; '.join(run.verdict.reasons)}")
    for result in run.results:
        for m in result.metrics:
            print(
                f"  {result.role:9s} {m.name:20s} {m.value:10.4f}  "
                f"95% CI [{m.ci_low:.4f}, {m.ci_high:.4f}]  n={m.n}"
            )
    for c in run.comparisons:
        print(
            f"  delta {c.metric:20s} {c.candidate_value:.4f} vs {c.baseline_value:.4f}: "
            f"{c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        )


async def measure(args: argparse.Namespace, work: Path) -> None:
    tg = _ticketgen()
    rows = [
        {"messages": json.loads(data)["messages"]}
        for data, truth in tg.TicketGenerator(seed=7).lines(args.rows)
        if truth["kind"] in ("clean", "mislabeled")
    ]
    random.Random(7).shuffle(rows)
    held_out = round(len(rows) * 0.15)
    pairs = list(tg.TicketGenerator(seed=11).preference_pairs(args.pairs))
    print(f"{len(rows) - held_out} train / {held_out} held-out tickets, {len(pairs)} pairs")

    with NatsServer(work / "nats") as nats:
        common = {"nats": {"url": nats.url}, "grpc": {"port": 0}, "data_dir": work / "data"}
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
        bus = await EventBus.connect(nats.url, name="measure-tickets")
        store = LocalArtifactStore(work / "data" / "artifacts")
        try:
            tickets = registry_pb2.DatasetVersion(
                id="dv-tickets", workspace="default", dataset="tickets", content_hash="tickets",
                kind=common_pb2.DATASET_KIND_SFT,
            )  # fmt: skip
            tickets.splits["train"].CopyFrom(await _split(store, rows[held_out:]))
            tickets.splits["eval"].CopyFrom(await _split(store, rows[:held_out]))
            prefs = registry_pb2.DatasetVersion(
                id="dv-prefs", workspace="default", dataset="prefs", content_hash="prefs",
                kind=common_pb2.DATASET_KIND_PREFERENCE,
            )  # fmt: skip
            prefs.splits["eval"].CopyFrom(await _split(store, pairs))
            for dv in (tickets, prefs):
                await bus.publish(
                    subjects.INGEST_DATASET_CURATED,
                    events_pb2.IngestDatasetCurated(
                        meta=event_meta(producer="measure"), job_id=dv.id, dataset_version=dv
                    ),
                    key=dv.id,
                )
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{trainer.port}") as tch,
                grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch,
                grpc.aio.insecure_channel(f"127.0.0.1:{evaluator.port}") as ech,
            ):
                tstub = trainer_pb2_grpc.TrainerServiceStub(tch)
                rstub = registry_pb2_grpc.RegistryServiceStub(rch)
                estub = evaluator_pb2_grpc.EvaluatorServiceStub(ech)
                started = time.monotonic()
                spec = trainer_pb2.TrainingJobSpec(
                    base_model="tiny:llama-xxs", method="sft", output_model="support-assistant",
                    datasets=[common_pb2.DatasetVersionRef(id="dv-tickets")],
                    peft=trainer_pb2.PeftConfig(type=trainer_pb2.PEFT_TYPE_NONE),
                    hyperparameters=trainer_pb2.Hyperparameters(
                        max_steps=args.steps, batch_size=8, max_length=args.max_length,
                        learning_rate=2e-3, assistant_only_loss=True,
                    ),
                    seed=7, resources=trainer_pb2.Resources(device="cpu"),
                )  # fmt: skip
                job = (
                    await tstub.SubmitTrainingJob(trainer_pb2.SubmitTrainingJobRequest(spec=spec))
                ).job
                job = (
                    await _until(
                        lambda: tstub.GetTrainingJob(
                            trainer_pb2.GetTrainingJobRequest(job_id=job.id)
                        ),
                        lambda r: r.job.status >= common_pb2.JOB_STATUS_SUCCEEDED,
                    )
                ).job
                if job.status != common_pb2.JOB_STATUS_SUCCEEDED:
                    raise RuntimeError(f"training failed: {job.error}")
                candidate = job.model_version_id
                await _until(
                    lambda: rstub.ListModelVersions(registry_pb2.ListModelVersionsRequest()),
                    lambda r: any(m.id == candidate for m in r.model_versions),
                )
                print(f"trained {candidate} in {time.monotonic() - started:.0f} s")

                for name, dataset, metrics in (
                    ("tickets", "dv-tickets",
                     ["rouge_l", "bleu", "token_f1", "perplexity", "generation_smoke"]),
                    ("prefs", "dv-prefs", ["preference_accuracy", "perplexity"]),
                ):  # fmt: skip
                    evaluation = evaluator_pb2.EvaluationSpec(
                        candidate=evaluator_pb2.EvaluatedModel(
                            role="candidate", model=common_pb2.ModelVersionRef(id=candidate)
                        ),
                        baselines=[
                            evaluator_pb2.EvaluatedModel(role="base", base_model="tiny:llama-xxs")
                        ],
                        dataset=common_pb2.DatasetVersionRef(id=dataset),
                        metrics=[common_pb2.PluginRef(name=m) for m in metrics],
                        generation=common_pb2.GenerationConfig(
                            max_new_tokens=args.max_new_tokens, batch_size=16
                        ),
                        max_samples=args.max_samples,
                        gate=evaluator_pb2.GatePolicy(
                            rules=[
                                evaluator_pb2.GateRule(
                                    metric=metrics[0], baseline="base", min_delta=0.02,
                                    ci_excludes_zero=True,
                                )
                            ]
                        ),
                        bootstrap_samples=1000,
                        seed=7,
                    )  # fmt: skip
                    started = time.monotonic()
                    run = (
                        await estub.SubmitEvaluationRun(
                            evaluator_pb2.SubmitEvaluationRunRequest(spec=evaluation)
                        )
                    ).run
                    run = (
                        await _until(
                            lambda run=run: estub.GetEvaluationRun(
                                evaluator_pb2.GetEvaluationRunRequest(run_id=run.id)
                            ),
                            lambda r: r.run.status >= common_pb2.JOB_STATUS_SUCCEEDED,
                        )
                    ).run
                    if run.status != common_pb2.JOB_STATUS_SUCCEEDED:
                        raise RuntimeError(f"evaluation failed: {run.error}")
                    _print_run(name, run, time.monotonic() - started)
                    for ref, suffix in ((run.report_html, "html"), (run.report_json, "json")):
                        data = await store.get_bytes(ArtifactRef.from_uri(ref.uri))
                        (args.out / f"{name}.report.{suffix}").write_bytes(data)
        finally:
            await bus.close()
            for running in (evaluator, trainer, registry):
                await running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the reports")
    parser.add_argument("--rows", type=int, default=1000, help="ticketgen rows (before junk)")
    parser.add_argument("--pairs", type=int, default=120, help="held-out preference pairs")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-samples", type=int, default=0, help="0 = every held-out sample")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(measure(args, Path(work)))


if __name__ == "__main__":
    main()
