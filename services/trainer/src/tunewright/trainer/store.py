"""Job state in SQLite (``<data_dir>/trainer/jobs.db``): jobs, checkpoints, events.

Every worker and servicer of a host opens the same file (WAL mode, short transactions), so a
restarted worker finds the jobs it was running and Get/List/Stream answer from any of them.
Claiming a job is one ``BEGIN IMMEDIATE`` transaction: two workers never both run it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunewright.core.artifacts import ArtifactRef
from tunewright.core.errors import NotFound
from tunewright.trainer.jobs import (
    Checkpoint,
    Job,
    JobEvent,
    JobSpec,
    JobStatus,
    Progress,
    Transition,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    request_id TEXT UNIQUE,
    spec_bytes BLOB NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_workspace ON jobs (workspace, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
"""


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- jobs ---

    def create(self, job: Job, *, request_id: str = "") -> tuple[Job, bool]:
        """Insert ``job``; an existing job with the same id or request id wins (not created)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT spec_bytes, data FROM jobs WHERE id = ? OR (request_id = ? AND ? != '')",
                (job.id, request_id, request_id),
            ).fetchone()
            if row is not None:
                return _job_from_row(row), False
            db.execute(
                "INSERT INTO jobs (id, workspace, status, created_at, request_id, spec_bytes, "
                "data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.spec.workspace,
                    job.status.value,
                    job.created_at,
                    request_id or None,
                    job.spec_bytes,
                    _dump(job),
                ),
            )
        return job, True

    def find(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT spec_bytes, data FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _job_from_row(row)

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise NotFound(f"training job {job_id!r} not found", reason="JOB_NOT_FOUND")
        return job

    def update(self, job_id: str, change: Any) -> Job:
        """Apply ``change(job)`` (mutates; may return False to skip) in one transaction."""
        with self._tx() as db:
            row = db.execute("SELECT spec_bytes, data FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"training job {job_id!r} not found", reason="JOB_NOT_FOUND")
            job = _job_from_row(row)
            if change(job) is False:
                return job
            db.execute(
                "UPDATE jobs SET status = ?, data = ? WHERE id = ?",
                (job.status.value, _dump(job), job_id),
            )
        return job

    def list(
        self,
        *,
        workspace: str = "",
        statuses: Sequence[JobStatus] = (),
        after_id: str = "",
        limit: int = 50,
    ) -> list[Job]:
        sql = "SELECT spec_bytes, data FROM jobs WHERE id > ?"
        args: list[Any] = [after_id]
        if workspace:
            sql += " AND workspace = ?"
            args.append(workspace)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_job_from_row(r) for r in rows]

    def running(self) -> list[Job]:
        return self.list(statuses=[JobStatus.RUNNING], limit=10_000)

    # --- checkpoints ---

    def add_checkpoint(self, job_id: str, checkpoint: Checkpoint) -> Job:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints (job_id, step, data) VALUES (?, ?, ?)",
                (job_id, checkpoint.step, json.dumps(dataclasses.asdict(checkpoint))),
            )

        def latest(job: Job) -> None:
            if job.latest_checkpoint is None or checkpoint.step >= job.latest_checkpoint.step:
                job.latest_checkpoint = checkpoint

        return self.update(job_id, latest)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM checkpoints WHERE job_id = ? ORDER BY step", (job_id,)
            ).fetchall()
        return [_checkpoint(json.loads(r[0])) for r in rows]

    # --- events ---

    def add_event(
        self,
        job_id: str,
        *,
        message: str,
        level: str = "info",
        kind: str = "message",
        metrics: dict[str, float] | None = None,
        status: JobStatus | None = None,
    ) -> JobEvent:
        with self._tx() as db:
            (last,) = db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()
            event = JobEvent(
                job_id=job_id,
                sequence=int(last) + 1,
                created_at=time.time(),
                level=level,
                kind=kind,
                message=message,
                metrics=dict(metrics or {}),
                status=status,
            )
            db.execute(
                "INSERT INTO events (job_id, sequence, data) VALUES (?, ?, ?)",
                (job_id, event.sequence, json.dumps(dataclasses.asdict(event))),
            )
        return event

    def events(self, job_id: str, *, after_sequence: int = 0) -> list[JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence",
                (job_id, after_sequence),
            ).fetchall()
        out = []
        for (data,) in rows:
            d = json.loads(data)
            d["status"] = JobStatus(d["status"]) if d["status"] else None
            out.append(JobEvent(**d))
        return out


# --- (de)serialisation: dataclasses <-> JSON ------------------------------------------------


def _dump(job: Job) -> str:
    d = dataclasses.asdict(job)
    del d["spec_bytes"]
    return json.dumps(d)


def _link(d: dict[str, Any] | None) -> ArtifactRef | None:
    return None if d is None else ArtifactRef(**d)


def _checkpoint(d: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        step=d["step"],
        artifact=ArtifactRef(**d["artifact"]),
        created_at=d["created_at"],
        metrics=d["metrics"],
    )


def _job_from_row(row: tuple[bytes, str]) -> Job:
    spec_bytes, data = row
    d = json.loads(data)
    spec = d.pop("spec")
    spec["dataset_ids"] = tuple(spec["dataset_ids"])
    spec["trackers"] = tuple((name, params) for name, params in spec["trackers"])
    d["spec"] = JobSpec(**spec)
    d["status"] = JobStatus(d["status"])
    d["history"] = [Transition(JobStatus(t["status"]), t["at"], t["reason"]) for t in d["history"]]
    d["progress"] = Progress(**d["progress"])
    d["latest_checkpoint"] = (
        None if d["latest_checkpoint"] is None else _checkpoint(d["latest_checkpoint"])
    )
    d["output"] = _link(d["output"])
    d["tokenizer"] = _link(d["tokenizer"])
    return Job(spec_bytes=bytes(spec_bytes), **d)
