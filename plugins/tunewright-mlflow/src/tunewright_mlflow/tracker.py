"""The ``mlflow`` tracker: one MLflow run per training job attempt.

The trainer calls ``MlflowTracker(job_id=..., directory=..., **params)`` in the worker, then
``log(step, metrics)`` for every step and ``close()`` at the end. Params (from the job's
``trackers[].params``): ``tracking_uri`` (default ``sqlite:///<directory>/mlflow.db``, with
artifacts beside it), ``experiment`` (default ``tunewright``). Metrics are buffered and sent in
batches (every ``flush_every`` steps or ``flush_interval_s``), so a remote server does not slow
the worker down step by step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call


class MlflowTracker:
    def __init__(
        self,
        *,
        job_id: str,
        directory: Path,
        tracking_uri: str | None = None,
        experiment: str = "tunewright",
        flush_every: int = 50,
        flush_interval_s: float = 5.0,
    ) -> None:
        from mlflow.tracking import MlflowClient

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or f"sqlite:///{directory / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None if tracking_uri else (directory / "mlflow-artifacts").as_uri()
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        run = self.client.create_run(experiment_id, run_name=job_id, tags={"tw.job_id": job_id})
        self.run_id: str = run.info.run_id
        self._flush_every = max(1, int(flush_every))
        self._flush_interval_s = float(flush_interval_s)
        self._pending: list[Any] = []
        self._steps = 0
        self._last_flush = time.monotonic()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._pending += [
            Metric(key=_key(k), value=float(v), timestamp=now_ms, step=int(step))
            for k, v in metrics.items()
        ]
        self._steps += 1
        due = time.monotonic() - self._last_flush >= self._flush_interval_s
        if self._steps % self._flush_every == 0 or due:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.client.set_terminated(self.run_id)


def _key(name: str) -> str:
    # MLflow keys allow letters, digits, _ - . / and space; TRL uses rewards/margins etc.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
