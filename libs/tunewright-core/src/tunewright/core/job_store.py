"""Job state of a service in a small SQLite file: jobs, their events, cancel requests.

Get/List/Stream must answer for jobs that finished before the process started, and a cancel
must reach the worker running the job. A row holds the whole job message (``SynthJob``,
``IngestJob``, ...: any message with ``id``, ``workspace``, ``status``, ``history`` and
``finished_at``); job events (``common.v1.JobEvent``, one ``sequence`` per job) sit in their
own table so a stream resumes with ``after_sequence``. Workers sharing the data dir (one host)
share the state. One connection under a lock; every call is a short transaction.

A service subclasses :class:`JobStore` for its message type and adds what only it keeps
(extra columns, queries of its own) through :meth:`JobStore._query`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.timestamp_pb2 import Timestamp

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "TERMINAL", "JobMessage", "JobStore", "now_ts"]

TERMINAL = frozenset(
    {common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED}
)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    request_key TEXT UNIQUE,
    status INTEGER NOT NULL,
    created_at REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    job BLOB NOT NULL{extra}
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


class JobMessage(Protocol):
    """What the store reads and writes on a job message (the generated classes have it)."""

    id: str
    workspace: str
    status: common_pb2.JobStatus.ValueType

    @property
    def history(self) -> RepeatedCompositeFieldContainer[common_pb2.StatusTransition]: ...

    @property
    def finished_at(self) -> Timestamp: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


J = TypeVar("J", bound=JobMessage)


class JobStore(Generic[J]):
    """Jobs of one kind (``kind`` names them in errors: ``synth`` -> ``SYNTH_JOB_NOT_FOUND``).

    :param parse: the message class's ``FromString``.
    :param extra_columns: column definitions a service adds to ``jobs`` (``"name BLOB"``).
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes], J],
        *,
        kind: str,
        extra_columns: Sequence[str] = (),
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._parse = parse
        self._kind = kind
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        extra = "".join(f",\n    {column}" for column in extra_columns)
        self._db.executescript(_JOBS.format(extra=extra))
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Run one statement under the lock; its rows (none for an UPDATE)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def not_found(self, job_id: str) -> NotFound:
        return NotFound(
            f"{self._kind} job {job_id!r} not found", reason=f"{self._kind.upper()}_JOB_NOT_FOUND"
        )

    # --- jobs ---
    def create(self, job: J, *, request_key: str | None = None) -> tuple[J, bool]:
        """Insert ``job``; an existing job with its ``request_key`` or id is returned instead.

        :returns: (job, created)
        """
        with self._lock:
            if request_key:
                row = self._db.execute(
                    "SELECT job FROM jobs WHERE request_key = ?", (request_key,)
                ).fetchone()
                if row:
                    return self._parse(row[0]), False
            row = self._db.execute("SELECT job FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row:
                return self._parse(row[0]), False
            self._db.execute(
                "INSERT INTO jobs (id, workspace, request_key, status, created_at, job) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, job.workspace, request_key or None, job.status, time.time(),
                 job.SerializeToString()),
            )  # fmt: skip
        return job, True

    def get(self, job_id: str) -> J:
        rows = self._query("SELECT job FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise self.not_found(job_id)
        return self._parse(rows[0][0])

    def find(self, job_id: str) -> J | None:
        try:
            return self.get(job_id)
        except NotFound:
            return None

    def save(self, job: J) -> None:
        self._query(
            "UPDATE jobs SET status = ?, job = ? WHERE id = ?",
            (job.status, job.SerializeToString(), job.id),
        )

    def set_status(self, job: J, status: int, reason: str = "") -> J:
        """Move ``job`` to ``status`` (recorded in its history) and save it."""
        job.status = cast("common_pb2.JobStatus.ValueType", status)
        job.history.add(status=job.status, at=now_ts(), reason=reason)
        if status in TERMINAL:
            job.finished_at.CopyFrom(now_ts())
        self.save(job)
        return job

    def list_jobs(
        self,
        workspace: str,
        *,
        statuses: Iterable[int] = (),
        offset: int = 0,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> list[J]:
        """Jobs of ``workspace`` in creation order, optionally only those in ``statuses``."""
        wanted = sorted(set(statuses))
        query = "SELECT job FROM jobs WHERE workspace = ?"
        params: list[object] = [workspace]
        if wanted:
            query += f" AND status IN ({', '.join('?' * len(wanted))})"
            params += wanted
        query += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        params += [limit, offset]
        return [self._parse(r[0]) for r in self._query(query, params)]

    def list_page(
        self, workspace: str, statuses: Iterable[int], page: common_pb2.PageRequest
    ) -> tuple[list[J], common_pb2.PageResponse]:
        """One page of :meth:`list_jobs` for a List RPC; the token is the next offset."""
        size = min(page.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            offset = int(page.page_token or "0")
        except ValueError:
            raise InvalidArgument("page.page_token is not a token this server issued") from None
        jobs = self.list_jobs(workspace, statuses=statuses, offset=offset, limit=size + 1)
        token = str(offset + size) if len(jobs) > size else ""
        return jobs[:size], common_pb2.PageResponse(next_page_token=token)

    def request_cancel(self, job_id: str) -> J:
        """Raise the job's cancel flag (its worker polls :meth:`cancel_requested`).

        :returns: the job as it was; a finished job cannot be cancelled (``JOB_FINISHED``).
        """
        job = self.get(job_id)
        if job.status in TERMINAL:
            raise FailedPrecondition(
                f"{self._kind} job {job_id} has already finished", reason="JOB_FINISHED"
            )
        self._query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return job

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._query("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0][0])

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
        rows = self._query(
            "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence",
            (job_id, after_sequence),
        )
        return [common_pb2.JobEvent.FromString(r[0]) for r in rows]

    async def follow_events(
        self, job_id: str, after_sequence: int = 0, *, poll_s: float = 0.2
    ) -> AsyncIterator[common_pb2.JobEvent]:
        """The job's events after ``after_sequence``, as they come, until it has finished.

        Raises the not-found error before yielding anything for an unknown job.
        """
        after = after_sequence
        self.get(job_id)
        while True:
            done = self.get(job_id).status in TERMINAL
            for event in self.events(job_id, after):
                after = event.sequence
                yield event
            if done:
                return
            await asyncio.sleep(poll_s)
