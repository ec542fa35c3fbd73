"""TensorBoard tracker: per-step training metrics as event files (``tensorboard --logdir``).

The trainer calls a tracker factory as ``factory(job_id=..., directory=..., **params)`` and
gets an object with ``log(step, metrics)`` and ``close()``. Params: ``logdir`` (default
``<directory>/tensorboard``); each job writes to ``<logdir>/<job_id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunewright.core.plugins import TrackerRegistry, hookimpl


class TensorboardTracker:
    def __init__(self, *, job_id: str, directory: Path, logdir: str | None = None) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = (Path(logdir) if logdir else Path(directory) / "tensorboard") / job_id
        self._writer: Any = SummaryWriter(logdir=str(self.logdir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, float(value), global_step=step)

    def close(self) -> None:
        self._writer.close()


@hookimpl
def tw_register_trackers(registry: TrackerRegistry) -> None:
    registry.add(
        name="tensorboard",
        factory=TensorboardTracker,
        description="Per-step metrics as TensorBoard event files under the data dir "
        "(params.logdir to choose).",
    )
