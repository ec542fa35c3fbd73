"""`tunewright rerun` against the real stack (`tunewright up`, every service a process): a model
version trained by a pipeline is trained again from what the registry recorded, and the final
loss repeats. The DPO-style inheritance is covered too: the second training stage names only its
parent, and the registry's run shows the base model and seed it took from it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunewright.cli.pipelines import RegistryClient
from tunewright.cli.stack import StackSettings, with_local_credentials
from tunewright.core.settings import load_settings

PIPELINE = """
name: rerun-demo
stages:
  - name: curate
    kind: ingest
    spec:
      dataset: rerun-tickets
      source: {uri: "${params.source}"}
      split: {eval_fraction: 0.2, seed: 3}
  - name: sft
    kind: train
    spec:
      method: sft
      base_model: tiny:llama-xxs
      output_model: rerun-model
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
      peft: {type: PEFT_TYPE_NONE}
      hyperparameters: {max_steps: 6, batch_size: 4, max_length: 64, learning_rate: 0.002}
      seed: 11
      resources: {device: cpu}
  - name: more
    kind: train
    spec:
      method: sft
      parent_model: {id: "${stages.sft.model_version_id}"}
      output_model: rerun-model
      datasets: [{id: "${stages.curate.dataset_version_id}"}]
      peft: {type: PEFT_TYPE_NONE}
      hyperparameters: {max_steps: 4, batch_size: 4, max_length: 64, learning_rate: 0.001}
      resources: {device: cpu}
"""


@pytest.fixture
def stack_dir(tmp_path: Path, stack_cli: Any) -> Iterator[Path]:
    nats_port, http_port, *ports = stack_cli.free_ports(2 + len(stack_cli.services))
    config = {
        "stack": {
            "nats_port": nats_port,
            "serve_http_port": http_port,
            "ports": dict(zip(stack_cli.services, ports, strict=True)),
        }
    }
    (tmp_path / "tunewright.yaml").write_text(yaml.safe_dump(config))
    yield tmp_path
    stack_cli.run("down", "--config", "tunewright.yaml", cwd=tmp_path, check=False)


def _tickets(path: Path, n: int = 40) -> Path:
    with path.open("w") as out:
        for i in range(n):
            product = ("AcmeCRM", "AcmeDesk")[i % 2]
            out.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"ticket {i}: {product} export fails"},
                            {"role": "assistant", "content": f"Run the {product} export again."},
                        ]
                    }
                )
                + "\n"
            )
    return path


@pytest.mark.timeout(600)
def test_rerun_repeats_the_final_loss_from_the_recorded_lineage(
    stack_dir: Path, stack_cli: Any
) -> None:
    cfg = ("--config", "tunewright.yaml")
    stack_cli.run("up", *cfg, cwd=stack_dir, timeout=180)
    source = stack_cli.run(
        "upload", str(_tickets(stack_dir / "tickets.jsonl")), *cfg, cwd=stack_dir
    ).stdout.strip()
    (stack_dir / "pipeline.yaml").write_text(PIPELINE)
    ran = stack_cli.run(
        "run", "pipeline.yaml", "-p", f"source={source}", *cfg, cwd=stack_dir, timeout=400
    )
    versions = re.findall(r"model_version_id=(mv_\w+)", ran.stdout)
    assert len(versions) == 2, ran.stdout
    first, child = versions

    rerun = stack_cli.run("rerun", child, "--check", *cfg, cwd=stack_dir, timeout=300)
    print(rerun.stdout)
    assert "reproduced" in rerun.stdout and "not reproduced" not in rerun.stdout
    assert re.search(r"train_loss\W+\d+\.\d+\W+\d+\.\d+\W+[+-]\d", rerun.stdout), rerun.stdout
    assert "train_runtime" not in rerun.stdout  # the machine's speed is no part of it
    # same code, libraries, base weights and device: nothing in the environment differs
    assert "environment differs" not in rerun.stdout, rerun.stdout

    # what the registry recorded for the child: the parent's base model and seed, and the
    # environment a rerun needs (base weights hashed, libraries, the code's commit)
    settings = load_settings(
        StackSettings, stack_dir / "tunewright.yaml", data_dir=stack_dir / ".tunewright"
    )
    client = RegistryClient(with_local_credentials(settings))
    try:
        run = client.training_run(client.model_version(child).training_run_id)
        parent_run = client.training_run(client.model_version(first).training_run_id)
    finally:
        client.close()
    assert run.spec.base_model == "tiny:llama-xxs" and run.spec.seed == 11
    env = run.environment
    assert env.base_model == "tiny:llama-xxs" and env.seed == 11
    assert len(env.base_weights_sha256) == 64
    assert env.base_weights_sha256 == parent_run.environment.base_weights_sha256
    assert {"torch", "transformers", "peft", "trl"} <= set(env.library_versions)
    assert env.device == "cpu" and env.python_version and env.code_version
