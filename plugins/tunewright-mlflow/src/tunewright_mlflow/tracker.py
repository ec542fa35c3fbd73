"""The ``mlflow`` tracker: one MLflow run per training job attempt.

The trainer calls ``MlflowTracker(job_id=..., directory=..., **params)`` in the worker, then
``log(step, metrics)`` for every step and ``close()`` at the end. Params (from the job's
``trackers[].params``): ``tracking_uri`` (default ``sqlite:///<directory>/mlflow.db``, with
artifacts beside it), ``experiment`` (default ``tunewright``). Metrics are buffered and sent in
batches (every ``flush_every`` steps or ``flush_interval_s``), so a remote server does not slow
the worker down step by step.

``tracking_uri`` is a destination, so the operator's ``outbound`` policy (core settings; the
trainer passes ``outbound=settings.outbound``, else the defaults apply) checks it before any
client is made: a local store (a path, ``file:``, ``sqlite:``) must resolve inside
``directory`` or ``outbound.allowed_paths``; anything else (``http(s)://``, ``postgresql://``,
``databricks``) must be covered by ``outbound.allowed_urls``. :func:`check_tracking_uri` is
that check alone, for a service that validates a spec before it runs.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.settings import OutboundSettings

_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
_FIELD = "params.tracking_uri"
#: tracking URIs MLflow reads as a service although they have no "scheme://"
_NAMED_SERVICES = ("databricks", "databricks-uc", "uc")


def check_tracking_uri(
    tracking_uri: str, *, directory: Path, outbound: OutboundSettings | None = None
) -> tuple[str, Path | None]:
    """The URI to use and where new experiments keep artifacts (None: the store decides);
    :class:`InvalidArgument` when the operator's policy does not allow it (relative paths are
    relative to ``directory``; see the module docstring)."""
    policy = OutboundSettings.given(outbound)
    parts = urllib.parse.urlsplit(tracking_uri)
    scheme = parts.scheme.lower()
    named = tracking_uri.split(":", 1)[0].lower() in _NAMED_SERVICES
    if scheme in ("", "file", "sqlite") and not named:
        if parts.query or parts.netloc not in ("", "localhost"):
            raise _malformed("a local store is a path, file:///path or sqlite:///file.db")
        path = urllib.parse.unquote(parts.path) if scheme else tracking_uri
        if scheme == "file":  # a file store keeps its artifacts inside
            return policy.check_path(path, field=_FIELD, root=directory).as_uri(), None
        if scheme == "":
            return str(policy.check_path(path, field=_FIELD, root=directory)), None
        # SQLAlchemy: sqlite:///x.db is relative, sqlite:////x.db absolute
        resolved = policy.check_path(path[1:], field=_FIELD, root=directory)
        return f"sqlite:///{resolved}", resolved.parent / "mlflow-artifacts"
    policy.check_url(tracking_uri, field=_FIELD)
    return tracking_uri, None


def _destination(
    tracking_uri: str | None, directory: Path, outbound: OutboundSettings | None
) -> tuple[str | None, Path | None]:
    """(the checked tracking URI, where new experiments keep artifacts); no URI: the job's
    own SQLite store in ``directory``, artifacts beside it."""
    if tracking_uri:
        return check_tracking_uri(tracking_uri, directory=directory, outbound=outbound)
    OutboundSettings.given(outbound)  # a policy passed in must be one
    return None, directory / "mlflow-artifacts"


def _malformed(what: str) -> InvalidArgument:
    return InvalidArgument(f"{_FIELD}: {what}", field_violations=[FieldViolation(_FIELD, what)])


class MlflowTracker:
    @staticmethod
    def check(
        *,
        directory: Path,
        tracking_uri: str | None = None,
        experiment: str = "tunewright",
        flush_every: int = 50,
        flush_interval_s: float = 5.0,
        outbound: OutboundSettings | None = None,
    ) -> None:
        """The constructor's checks, making nothing: for a preflight before the job runs
        (unknown params fail as :class:`TypeError`)."""
        _destination(tracking_uri, Path(directory), outbound)

    def __init__(
        self,
        *,
        job_id: str,
        directory: Path,
        tracking_uri: str | None = None,
        experiment: str = "tunewright",
        flush_every: int = 50,
        flush_interval_s: float = 5.0,
        outbound: OutboundSettings | None = None,
    ) -> None:
        directory = Path(directory)
        # checked before anything is made or sent
        tracking_uri, artifacts = _destination(tracking_uri, directory, outbound)
        from mlflow.tracking import MlflowClient

        directory.mkdir(parents=True, exist_ok=True)
        if artifacts is not None:
            artifacts.parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or f"sqlite:///{directory / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            # a SQLite store keeps its artifacts beside it (not in ./mlruns of the worker's cwd)
            location = None if artifacts is None else artifacts.as_uri()
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
