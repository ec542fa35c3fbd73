"""MLflow experiment tracker for training jobs (see README.md). Registration imports no mlflow."""

from __future__ import annotations

from tunewright.core.plugins import TrackerRegistry, hookimpl
from tunewright_mlflow.tracker import MlflowTracker


@hookimpl
def tw_register_trackers(registry: TrackerRegistry) -> None:
    registry.add(
        name="mlflow",
        factory=MlflowTracker,
        description="Per-step metrics to MLflow: a SQLite store under the data dir by default, "
        "a tracking server with params.tracking_uri.",
    )
