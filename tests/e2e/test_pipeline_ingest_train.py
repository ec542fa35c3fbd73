"""The first real multi-service pipeline: generated dirty support tickets are uploaded to the
ingest service, and a pipeline run by the registry curates them (real presidio, dedup,
split) and fine-tunes a tiny model on the curated dataset version (real TRL SFT + LoRA),
then registers the model with lineage down to the curation report. No stage is played by
the test: ingest, trainer and registry are the real services, in one process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.ingest.server import DEFINITION as INGEST
from tunewright.registry.server import DEFINITION as REGISTRY
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc
from tunewright.trainer.server import DEFINITION as TRAINER

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the training child process inherits it
ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """
name: tickets-sft
stages:
  - name: curate
    kind: ingest
    spec:
      dataset: tickets
      source: {uri: "${params.source}"}
      split: {eval_fraction: 0.2, seed: 1}
  - name: sft
    kind: train
    spec:
      method: sft
      base_model: tiny:llama-xxs
      output_model: support-assistant
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
      hyperparameters: {max_steps: 4, batch_size: 4, max_length: 96}
      seed: 3
      resources: {device: cpu}
"""


async def test_tickets_are_curated_then_trained_on_by_a_registry_pipeline(
    nats_url: str, tmp_path: Path, ticketgen: Any, upload: Any
) -> None:
    source = ticketgen.write_tickets(tmp_path / "src", 200, seed=5)
    common = {"nats": {"url": nats_url}, "grpc": {"port": 0}, "data_dir": tmp_path / "data"}
    services = [
        await start_service(definition, load_settings(definition.settings_cls, **common))
        for definition in (REGISTRY, INGEST, TRAINER)
    ]
    registry, ingest, _trainer = services
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{registry.port}") as rch:
            artifact = await upload(ingest.port, source.read_bytes())
            rstub = registry_pb2_grpc.RegistryServiceStub(rch)
            run = (
                await rstub.SubmitPipelineRun(
                    registry_pb2.SubmitPipelineRunRequest(
                        spec_yaml=PIPELINE, parameters={"source": artifact.uri}
                    )
                )
            ).run
            for _ in range(900):
                run = (
                    await rstub.GetPipelineRun(registry_pb2.GetPipelineRunRequest(run_id=run.id))
                ).run
                if run.status >= common_pb2.JOB_STATUS_SUCCEEDED:
                    break
                await asyncio.sleep(0.2)
            assert run.status == common_pb2.JOB_STATUS_SUCCEEDED, (run.error, list(run.stages))

            dataset_id = run.stages[0].outputs["dataset_version_id"]
            dv = (
                await rstub.GetDatasetVersion(
                    registry_pb2.GetDatasetVersionRequest(
                        ref=common_pb2.DatasetVersionRef(id=dataset_id)
                    )
                )
            ).dataset_version
            assert dv.counts.total == 200 and 0 < dv.counts.accepted < 200  # junk went somewhere
            graph = await rstub.GetLineage(
                registry_pb2.GetLineageRequest(
                    model=common_pb2.ModelVersionRef(id=run.model_version_id)
                )
            )
            edges = {(e.from_id, e.relation, e.to_id) for e in graph.edges}
            assert (run.model_version_id, "trained_on", dataset_id) in edges
            assert (dataset_id, "curation_report", dv.curation_report.uri) in edges
            assert (run.model_version_id, "base_model", "tiny:llama-xxs") in edges
    finally:
        for running in reversed(services):
            await running.stop()
