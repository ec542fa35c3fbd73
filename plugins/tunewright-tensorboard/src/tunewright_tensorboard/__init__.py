"""TensorBoard tracker: per-step training metrics as event files (``tensorboard --logdir``).

The trainer calls a tracker factory as ``factory(job_id=..., directory=..., **params)`` and
gets an object with ``log(step, metrics)`` and ``close()``. Params: ``logdir`` (default
``<directory>/tensorboard``); each job writes to ``<logdir>/<job_id>``.

``logdir`` is checked against the operator's ``outbound`` policy (core settings; the trainer
passes ``outbound=settings.outbound``, else the defaults apply) before anything is written: a
path (relative ones are relative to ``directory``) must resolve inside ``directory`` or an
``outbound.allowed_paths`` folder, so ``..`` and symlinks cannot leave them; a URL
(tensorboardX writes to ``s3://``, ``gs://``) must be covered by ``outbound.allowed_urls``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunewright.core.plugins import TrackerRegistry, hookimpl
from tunewright.core.settings import OutboundSettings

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_logdir(
    logdir: str | None, *, directory: Path, outbound: OutboundSettings | None = None
) -> str:
    """The folder (or URL) the tracker writes under; :class:`InvalidArgument` naming
    ``params.logdir`` when the policy does not allow it."""
    policy = OutboundSettings.given(outbound)
    directory = Path(directory)
    if not logdir:
        return str(directory / "tensorboard")
    if _URL.match(logdir):
        return policy.check_url(logdir.rstrip("/"), field="params.logdir")
    return str(policy.check_path(logdir, field="params.logdir", root=directory))


class TensorboardTracker:
    @staticmethod
    def check(
        *, directory: Path, logdir: str | None = None, outbound: OutboundSettings | None = None
    ) -> None:
        """The constructor's checks, writing nothing: for a preflight before the job runs."""
        check_logdir(logdir, directory=directory, outbound=outbound)

    def __init__(
        self,
        *,
        job_id: str,
        directory: Path,
        logdir: str | None = None,
        outbound: OutboundSettings | None = None,
    ) -> None:
        root = check_logdir(logdir, directory=directory, outbound=outbound)
        from tensorboardX import SummaryWriter

        self.logdir: Path | str = f"{root}/{job_id}" if _URL.match(root) else Path(root) / job_id
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
