"""``tunewright rerun MODEL_VERSION``: train a model version again from its lineage.

The registry keeps, per training run, the job spec as the trainer resolved it (base model and
seed included, also when they came from the parent) and the run environment (library versions,
git commit, base-weight sha256, device). A rerun submits that spec unchanged as a one-stage
pipeline (same dataset versions, same parent, same seed), follows it, and compares the two
runs: final metrics, and what differs in the environment. On the same machine and libraries a
CPU run repeats its final loss to ~1e-6 (tests/e2e/test_rerun.py checks <= 1e-4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from google.protobuf import json_format

from tunewright.registry.v1 import registry_pb2
from tunewright.trainer.v1 import trainer_pb2

#: the metric a rerun is judged by, and the trainer's name for it
FINAL_LOSS = "train_loss"
#: metrics that measure the machine's speed, not the model (left out of the comparison)
_TIMINGS = ("runtime", "per_second", "preparation_time")


class RerunError(Exception):
    """The version cannot be rerun (no training run, no recorded spec)."""


def rerun_pipeline(version: registry_pb2.ModelVersion, run: registry_pb2.TrainingRun) -> str:
    """The one-stage pipeline YAML that trains ``version`` again."""
    if not run.HasField("spec") or not run.spec.method:
        raise RerunError(f"training run {run.id} of {version.id} has no recorded job spec")
    spec = json_format.MessageToDict(run.spec, preserving_proto_field_name=True)
    env = run.environment
    # runs recorded before the trainer resolved these: the environment has what was used
    if not spec.get("base_model") and env.base_model:
        spec["base_model"] = env.base_model
    if "seed" not in spec:
        spec["seed"] = str(env.seed or run.seed)
    spec.setdefault("labels", {})["rerun_of"] = version.id
    spec.pop("workspace", None)  # the registry fills in the pipeline's workspace
    return yaml.safe_dump(
        {
            "name": f"rerun-{version.model or 'model'}",
            "stages": [{"name": "train", "kind": "train", "spec": spec}],
        },
        sort_keys=False,
    )


@dataclass(frozen=True)
class Comparison:
    metrics: list[tuple[str, float, float]]  # name, original, rerun
    environment: list[tuple[str, str, str]]  # field, original, rerun (only those that differ)
    final_loss_delta: float | None = None
    notes: list[str] = field(default_factory=list)

    def reproduced(self, tolerance: float) -> bool:
        return self.final_loss_delta is not None and abs(self.final_loss_delta) <= tolerance


def compare(original: registry_pb2.TrainingRun, rerun: registry_pb2.TrainingRun) -> Comparison:
    a, b = dict(original.metrics), dict(rerun.metrics)
    metrics = [
        (name, a[name], b[name])
        for name in sorted(a.keys() & b.keys())
        if not any(clock in name for clock in _TIMINGS)
    ]
    delta = b[FINAL_LOSS] - a[FINAL_LOSS] if FINAL_LOSS in a and FINAL_LOSS in b else None
    differs = [
        (name, x, y)
        for name, x, y in _environment_fields(original.environment, rerun.environment)
        if x != y
    ]
    notes = []
    if not original.HasField("environment"):
        notes.append("the original run recorded no environment (trained before it was kept)")
    return Comparison(metrics, differs, delta, notes)


def _environment_fields(
    a: trainer_pb2.RunEnvironment, b: trainer_pb2.RunEnvironment
) -> list[tuple[str, str, str]]:
    rows = [
        (name, str(getattr(a, name)), str(getattr(b, name)))
        for name in (
            "base_model", "seed", "base_weights_sha256", "device", "python_version",
            "code_version", "git_commit",
        )
    ]  # fmt: skip
    libraries: Mapping[str, Any] = {**a.library_versions, **b.library_versions}
    rows += [
        (f"library {name}", a.library_versions.get(name, "-"), b.library_versions.get(name, "-"))
        for name in sorted(libraries)
    ]
    return rows
