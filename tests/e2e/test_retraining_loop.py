"""The retraining loop end to end: a production model, traffic that drifts, and the retraining
pipeline the monitor starts, run through every stage on a tiny model.

A short SFT pipeline (curate -> sft on tiny:llama-xxs) makes the production model, promoted to
``production`` (the first production model: forced, with a reason). Its traffic is logged
through the monitor: two in-distribution windows, then one where half is about a new product
with many thumbs-down. The monitor flags it and starts the shipped retraining pipeline
(services/monitor/.../retrain.yaml, only its sizes cut for CPU: ``policy.pipeline_file`` points
at that copy) with the ``simulated`` feedback backend and ``require_approval: true``: curate
the negatives -> candidates from the production model -> simulated rankings (a held-out eval
split) -> DPO on the production model -> preference_accuracy vs production on the held-out
pairs -> approve (the test approves through ``ApprovePipelineStage``) -> gated promotion. The
run ends either promoted or failed at the gate with a named reason; both are explained by the
evaluation's verdict.

Real parts: nats-server, registry (SQLite), ingest (presidio + spaCy), synth, trainer (TRL),
evaluator, monitor, the drift detectors and the simulated feedback backend. Nothing is played
by the test but the reviewer who approves.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from tunewright.common.v1 import common_pb2
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator.server import DEFINITION as EVALUATOR
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.monitor.policy import RETRAIN_PIPELINE
from tunewright.monitor.server import DEFINITION as MONITOR
from tunewright.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.synth.server import DEFINITION as SYNTH
from tunewright.trainer.server import DEFINITION as TRAINER

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[2]
WINDOW = 60
SUCCEEDED, FAILED, RUNNING = (
    common_pb2.JOB_STATUS_SUCCEEDED,
    common_pb2.JOB_STATUS_FAILED,
    common_pb2.JOB_STATUS_RUNNING,
)

# the production model: a few steps of full fine-tuning (a random tiny model learns little
# through LoRA alone), enough to give it weights of its own
PRODUCTION_PIPELINE = """
name: production-sft
stages:
  - name: curate
    kind: ingest
    spec:
      dataset: tickets
      source: {uri: "${params.source}"}
      split: {eval_fraction: 0.1, seed: 1}
  - name: sft
    kind: train
    spec:
      method: sft
      base_model: tiny:llama-xxs
      output_model: support-assistant
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
      peft: {type: PEFT_TYPE_NONE}
      hyperparameters: {max_steps: 10, batch_size: 8, max_length: 256, learning_rate: 0.002}
      seed: 1
      resources: {device: cpu}
"""


def _trafficgen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "trafficgen", ROOT / "bench" / "monitor" / "trafficgen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["trafficgen"] = module
    spec.loader.exec_module(module)
    return module


def _cpu_sized(path: Path) -> Path:
    """The shipped retraining pipeline with its sizes cut for a 2-core CPU (stages, wiring,
    held-out split, metric and gate unchanged): numbers cannot be ``${params.*}``."""
    spec = yaml.safe_load(RETRAIN_PIPELINE.read_text())
    stages = {s["name"]: s for s in spec["stages"]}
    candidates = stages["candidates"]["spec"]["preference_candidates"]
    candidates.update(max_prompts=15, responses_per_prompt=2)
    candidates["generation"].update(max_new_tokens=24, batch_size=16)
    stages["dpo"]["spec"]["hyperparameters"] = {
        "max_steps": 8,
        "batch_size": 4,
        "max_length": 256,
        "learning_rate": 0.0005,
    }
    stages["dpo"]["spec"]["resources"] = {"device": "cpu"}
    stages["evaluate"]["spec"].update(bootstrap_samples=200)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _pb(item: dict[str, Any], model_version_id: str) -> monitor_pb2.Interaction:
    return monitor_pb2.Interaction(
        interaction_id=item["interaction_id"],
        model_version_id=model_version_id,
        prompt=item["prompt"],
        response=item["response"],
        attributes=item["attributes"],
        feedback=monitor_pb2.Feedback(
            thumbs=item["feedback"]["thumbs"],
            escalated=item["feedback"]["escalated"],
            resolved=item["feedback"]["resolved"],
        ),
    )


async def _until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _stages(run: registry_pb2.PipelineRun) -> dict[str, Any]:
    return {s.name: (s.status, dict(s.outputs), s.error.reason) for s in run.stages}


async def test_drift_retrains_the_production_model_through_every_stage(
    nats_url: str, tmp_path: Path, upload: Any
) -> None:
    tg = _trafficgen()
    started = time.monotonic()
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": tmp_path / "data"}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    address = f"127.0.0.1:{registry.port}"
    services = [registry]
    try:
        for definition, extra in (
            (INGEST, {}),
            (TRAINER, {}),
            (SYNTH, {"synth": {"registry_address": address}}),
            (EVALUATOR, {"evaluator": {"registry_address": address}}),
            (
                MONITOR,
                {
                    "monitor": {
                        "registry_address": address,
                        "window": {"size": WINDOW, "max_wait_s": 60, "min_size": 20},
                        "policy": {
                            "action": "retrain",
                            "feedback_backend": "simulated",
                            "require_approval": True,
                            "pipeline_file": str(_cpu_sized(tmp_path / "retrain.yaml")),
                        },
                    }
                },
            ),
        ):
            services.append(
                await start_service(
                    definition, load_settings(definition.settings_cls, **common, **extra)
                )
            )
        ingest, monitor = services[1], services[-1]
        async with (
            grpc.aio.insecure_channel(address) as rch,
            grpc.aio.insecure_channel(f"127.0.0.1:{monitor.port}") as mch,
        ):
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            mstub = monitor_pb2_grpc.MonitorServiceStub(mch)

            async def get_run(run_id: str) -> registry_pb2.PipelineRun:
                reply = await rstub.GetPipelineRun(
                    registry_pb2.GetPipelineRunRequest(run_id=run_id)
                )
                return reply.run

            # 1. the production model, trained on in-distribution tickets
            training = [
                {
                    "messages": [
                        {"role": "user", "content": i["prompt"]},
                        {"role": "assistant", "content": i["response"]},
                    ],
                    "category": i["attributes"]["category"],
                }
                for i in tg.TrafficGenerator(seed=1).interactions(150)
            ]
            source = await upload(
                ingest.port, "".join(json.dumps(r) + "\n" for r in training).encode()
            )
            sft_run = (
                await rstub.SubmitPipelineRun(
                    registry_pb2.SubmitPipelineRunRequest(
                        spec_yaml=PRODUCTION_PIPELINE, parameters={"source": source.uri}
                    )
                )
            ).run

            async def trained() -> registry_pb2.PipelineRun | None:
                run = await get_run(sft_run.id)
                assert run.status != FAILED, _stages(run)
                return run if run.status == SUCCEEDED else None

            sft_run = await _until(trained, 240, "the production model's SFT run")
            production = sft_run.model_version_id
            await rstub.Promote(
                registry_pb2.PromoteRequest(
                    model_version_id=production,
                    alias="production",
                    force=True,
                    reason="e2e: the first production model",
                    actor="e2e",
                )
            )
            t_production = time.monotonic() - started

            # 2. its traffic: two windows like its training data, then a shifted one
            async def windows_done(n: int) -> bool:
                reply = await mstub.GetDriftReport(
                    monitor_pb2.GetDriftReportRequest(model_version_id=production)
                )
                return len([w for w in reply.windows if w.status != "pending"]) == n

            for n, generator in enumerate(
                (
                    tg.TrafficGenerator(seed=2),
                    tg.TrafficGenerator(seed=3),
                    tg.TrafficGenerator(seed=4, shift=0.5),
                ),
                1,
            ):
                await mstub.LogInteractions(
                    monitor_pb2.LogInteractionsRequest(
                        interactions=[
                            _pb(i, production)
                            for i in generator.interactions(WINDOW, start=(n - 1) * WINDOW)
                        ]
                    )
                )
                await _until(lambda n=n: windows_done(n), 120, f"window {n} to be analysed")

            detections = (
                await mstub.ListDetections(
                    monitor_pb2.ListDetectionsRequest(model_version_id=production)
                )
            ).detections
            assert len(detections) == 1, detections
            detection = detections[0]
            assert detection.action == "retrain" and detection.pipeline_run_id
            t_detected = time.monotonic() - started

            # 3. the retraining run: every stage up to the human gate
            async def awaiting_approval() -> registry_pb2.PipelineRun | None:
                try:
                    run = await get_run(detection.pipeline_run_id)
                except grpc.aio.AioRpcError:
                    return None  # not recorded yet
                assert run.status == RUNNING, (run.error, _stages(run))
                approve = next(s for s in run.stages if s.name == "approve")
                return run if approve.status == RUNNING else None

            run = await _until(awaiting_approval, 360, "the retraining run's approve stage")
            t_approve = time.monotonic() - started
            assert run.trigger_event_id == detection.id
            assert run.requested_by == f"monitor:{detection.id}"
            assert run.parameters["production_model"] == production
            assert [(s.name, s.status) for s in run.stages] == [
                ("negatives", SUCCEEDED),
                ("candidates", SUCCEEDED),
                ("feedback", SUCCEEDED),
                ("dpo", SUCCEEDED),
                ("evaluate", SUCCEEDED),
                ("approve", RUNNING),
                ("promote", run.stages[-1].status),
            ], _stages(run)
            assert run.stages[-1].status < RUNNING  # not started: it waits for the person
            outputs = {s.name: dict(s.outputs) for s in run.stages}

            # held-out pairs: DPO trained on the train split, the gate scored the eval split
            prefs = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(
                            id=outputs["feedback"]["dataset_version_id"]
                        )
                    )
                )
            ).dataset_version
            assert sorted(prefs.splits) == ["eval", "train"]
            assert prefs.counts.eval >= 1 and prefs.counts.train >= 1
            assert prefs.counts.train + prefs.counts.eval == prefs.counts.accepted
            candidate = outputs["dpo"]["model_version_id"]
            model = (
                await rstub.GetModelVersion(
                    registry_pb2.GetModelVersionRequest(
                        ref=common_pb2.ModelVersionRef(id=candidate)
                    )
                )
            ).model_version
            assert model.method == "dpo" and model.parent_model_version_id == production
            evaluation = (
                await rstub.GetEvaluation(
                    registry_pb2.GetEvaluationRequest(
                        evaluation_id=outputs["evaluate"]["evaluation_id"]
                    )
                )
            ).evaluation
            assert evaluation.run.spec.split == "eval"
            assert evaluation.run.spec.dataset.id == prefs.id
            (comparison,) = evaluation.run.comparisons
            assert (comparison.metric, comparison.baseline) == ("preference_accuracy", "production")
            verdict = evaluation.run.verdict
            assert verdict.reasons, "the gate explains its verdict"

            # 4. a person approves; the gated promotion decides
            await rstub.ApprovePipelineStage(
                registry_pb2.ApprovePipelineStageRequest(
                    run_id=run.id,
                    stage="approve",
                    approved=True,
                    actor="e2e-reviewer",
                    comment=f"read evaluation {evaluation.id}",
                )
            )

            async def ended() -> registry_pb2.PipelineRun | None:
                got = await get_run(run.id)
                return got if got.status in (SUCCEEDED, FAILED) else None

            run = await _until(ended, 60, "the retraining run to end")
            stages = {s.name: s for s in run.stages}
            assert stages["approve"].status == SUCCEEDED
            assert stages["approve"].outputs["approved_by"] == "e2e-reviewer"
            aliases = {
                a.alias: a.model_version_id
                for a in (
                    await rstub.ListAliases(
                        registry_pb2.ListAliasesRequest(model="support-assistant")
                    )
                ).aliases
            }
            print(
                f"\nretraining loop: production model {t_production:.0f} s, detection "
                f"{t_detected:.0f} s, approve stage {t_approve:.0f} s, "
                f"end {time.monotonic() - started:.0f} s; pairs train {prefs.counts.train} / "
                f"eval {prefs.counts.eval}; preference_accuracy {comparison.candidate_value:.3f} "
                f"vs production {comparison.baseline_value:.3f}, delta {comparison.delta:+.3f} "
                f"[{comparison.ci_low:+.3f}, {comparison.ci_high:+.3f}]; verdict "
                f"{verdict.passed} {list(verdict.reasons)}; run {run.status} {_stages(run)}"
            )
            if verdict.passed:
                assert run.status == SUCCEEDED, _stages(run)
                assert run.model_version_id == candidate
                assert aliases["production"] == candidate
            else:
                # the gate held: promotion refused with a named reason, production unchanged
                assert run.status == FAILED
                assert stages["promote"].status == FAILED
                assert stages["promote"].error.reason == "NO_PASSING_EVALUATION", _stages(run)
                assert aliases["production"] == production
    finally:
        for running in reversed(services):
            await running.stop()
