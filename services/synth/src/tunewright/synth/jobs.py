"""Synth job state: a small SQLite file, ``<data_dir>/synth/jobs.sqlite``.

Get/List/Stream must answer for jobs that finished before the process started, and a cancel
must reach the worker running the job. A row holds the whole ``SynthJob`` message; job events
(``common.v1.JobEvent``, one ``sequence`` per job) sit in their own table so a stream resumes
with ``after_sequence``. The same events go out on NATS (``tw.synth.job.progressed``).
Workers sharing the data dir (one host) share the state. One connection under a lock; every
call is a short transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import NotFound
from tunewright.synth.v1 import synth_pb2

TERMINAL = frozenset(
    {common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED}
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    request_key TEXT UNIQUE,
    status INTEGER NOT NULL,
    created_at REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    job BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_workspace ON jobs (workspace, created_at, id);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
"""


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- jobs ---
    def create(
        self, job: synth_pb2.SynthJob, *, request_key: str | None = None
    ) -> tuple[synth_pb2.SynthJob, bool]:
        """Insert ``job``; an existing job with its id or ``request_key`` is returned instead.

        :returns: (job, created)
        """
        with self._lock:
            row = self._db.execute(
                "SELECT job FROM jobs WHERE id = ? OR (request_key = ? AND ? IS NOT NULL)",
                (job.id, request_key, request_key),
            ).fetchone()
            if row:
                return synth_pb2.SynthJob.FromString(row[0]), False
            self._db.execute(
                "INSERT INTO jobs (id, workspace, request_key, status, created_at, job) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, job.workspace, request_key, job.status, time.time(),
                 job.SerializeToString()),
            )  # fmt: skip
        return job, True

    def get(self, job_id: str) -> synth_pb2.SynthJob:
        with self._lock:
            row = self._db.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"synth job {job_id!r} not found", reason="SYNTH_JOB_NOT_FOUND")
        return synth_pb2.SynthJob.FromString(row[0])

    def find(self, job_id: str) -> synth_pb2.SynthJob | None:
        try:
            return self.get(job_id)
        except NotFound:
            return None

    def save(self, job: synth_pb2.SynthJob) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, job = ? WHERE id = ?",
                (job.status, job.SerializeToString(), job.id),
            )

    def set_status(
        self, job: synth_pb2.SynthJob, status: int, reason: str = ""
    ) -> synth_pb2.SynthJob:
        job.status = status  # type: ignore[assignment]
        job.history.add(status=status, at=now_ts(), reason=reason)
        if status in TERMINAL:
            job.finished_at.CopyFrom(now_ts())
        self.save(job)
        return job

    def list_jobs(
        self, workspace: str, *, statuses: Iterable[int] = (), offset: int = 0, limit: int = 50
    ) -> list[synth_pb2.SynthJob]:
        wanted = sorted(set(statuses))
        query = "SELECT job FROM jobs WHERE workspace = ?"
        params: list[object] = [workspace]
        if wanted:
            query += f" AND status IN ({', '.join('?' * len(wanted))})"
            params += wanted
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        params += [limit, offset]
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [synth_pb2.SynthJob.FromString(r[0]) for r in rows]

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return bool(row and row[0])

    # --- events ---
    def add_event(self, event: common_pb2.JobEvent) -> common_pb2.JobEvent:
        """Store ``event`` with the job's next sequence number (set on the event)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE job_id = ?", (event.job_id,)
            ).fetchone()
            event.sequence = int(row[0]) + 1
            if not event.HasField("created_at"):
                event.created_at.CopyFrom(now_ts())
            self._db.execute(
                "INSERT INTO events (job_id, sequence, event) VALUES (?, ?, ?)",
                (event.job_id, event.sequence, event.SerializeToString()),
            )
        return event

    def events(self, job_id: str, after_sequence: int = 0) -> list[common_pb2.JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence",
                (job_id, after_sequence),
            ).fetchall()
        return [common_pb2.JobEvent.FromString(r[0]) for r in rows]
