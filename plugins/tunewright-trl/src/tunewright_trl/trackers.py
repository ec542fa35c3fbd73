"""The ``jsonl`` experiment tracker: one JSON object per logged step, in a local file.

The trainer calls a tracker factory as ``factory(job_id=..., directory=..., **params)`` and
gets an object with ``log(step, metrics)`` and ``close()``. Params: ``path`` (a file; default
``<directory>/<job_id>.jsonl``). A ``path`` must resolve inside ``directory`` (a relative one
is relative to it) or an ``outbound.allowed_paths`` folder of the operator's policy, which the
trainer passes as ``outbound=settings.outbound`` (else the defaults apply).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from tunewright.core.settings import OutboundSettings


class JsonlTracker:
    @staticmethod
    def check(
        *, directory: Path, path: str | None = None, outbound: OutboundSettings | None = None
    ) -> None:
        """The constructor's checks, writing nothing: for a preflight before the job runs."""
        policy = OutboundSettings.given(outbound)
        if path:
            policy.check_path(path, field="params.path", root=Path(directory))

    def __init__(
        self,
        *,
        job_id: str,
        directory: Path,
        path: str | None = None,
        outbound: OutboundSettings | None = None,
    ) -> None:
        policy = OutboundSettings.given(outbound)
        self.path = (
            policy.check_path(path, field="params.path", root=Path(directory))
            if path
            else Path(directory) / f"{job_id}.jsonl"
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._job_id = job_id

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {"job_id": self._job_id, "step": step, "time": time.time(), **metrics}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
