"""Ingest job state: a small SQLite file in ``<data_dir>/ingest/jobs.sqlite``.

Why SQLite and not only events: Get/List/Stream must answer for jobs that finished before the
process started, and a cancel must reach the worker that runs the job. The store is
:class:`tunewright.core.job_store.JobStore` (a row per ``IngestJob``, job events with a
``sequence`` per job so a stream can resume with ``after_sequence``, the cancel flag); each
row here also keeps the PII audit reference and the published ``DatasetVersion``. The same
events also go out on NATS (``tw.ingest.job.progressed``). Workers that share the data dir
(one host) share the state; a multi-host deployment would point every worker at one database
(future work).

The store also keeps which raw sources ingest *owns*: content its own upload or file import
put into the artifact store (the content was not there before). The store is shared by every
service and content-addressed, so the same bytes may be a registered dataset split, a model's
file or another service's upload: ingest deletes a finished job's source only when it owns it
(see :meth:`IngestWorker._delete_source <tunewright.ingest.worker.IngestWorker>`).
"""

from __future__ import annotations

import time
from pathlib import Path

from tunewright.common.v1 import common_pb2
from tunewright.core import job_store
from tunewright.core.job_store import TERMINAL, now_ts
from tunewright.ingest.v1 import ingest_pb2
from tunewright.registry.v1 import registry_pb2

__all__ = ["TERMINAL", "JobStore", "now_ts"]


class JobStore(job_store.JobStore[ingest_pb2.IngestJob]):
    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            ingest_pb2.IngestJob.FromString,
            kind="ingest",
            extra_columns=("pii_audit BLOB", "dataset_version BLOB"),
        )
        self._query(
            "CREATE TABLE IF NOT EXISTS owned_sources "
            "(sha256 TEXT PRIMARY KEY, claimed_at REAL NOT NULL)"
        )

    # --- sources ingest owns ---
    def claim_source(self, sha256: str) -> None:
        """Record that ingest put ``sha256`` into the artifact store (it was not there)."""
        self._query(
            "INSERT OR IGNORE INTO owned_sources (sha256, claimed_at) VALUES (?, ?)",
            (sha256, time.time()),
        )

    def owns_source(self, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM owned_sources WHERE sha256 = ?", (sha256,)))

    def disown_source(self, sha256: str) -> None:
        """Ingest no longer treats ``sha256`` as a disposable upload (deleted, or published)."""
        self._query("DELETE FROM owned_sources WHERE sha256 = ?", (sha256,))

    def source_in_use(self, sha256: str, *, besides: str) -> bool:
        """Whether a queued or running job other than ``besides`` reads the source ``sha256``."""
        done = sorted(TERMINAL)
        rows = self._query(
            f"SELECT job FROM jobs WHERE id != ? AND status NOT IN ({', '.join('?' * len(done))})",
            (besides, *done),
        )
        for (blob,) in rows:
            source = ingest_pb2.IngestJob.FromString(blob).spec.source
            if source.sha256 == sha256 or source.uri.endswith(sha256):
                return True
        return False

    def owned_sources(self) -> list[str]:
        return [row[0] for row in self._query("SELECT sha256 FROM owned_sources", ())]

    def source_last_read(self, sha256: str) -> float | None:
        """When the last finished job that read ``sha256`` ended (epoch seconds), or None."""
        done = sorted(TERMINAL)
        rows = self._query(
            f"SELECT job FROM jobs WHERE status IN ({', '.join('?' * len(done))})", tuple(done)
        )
        last: float | None = None
        for (blob,) in rows:
            job = ingest_pb2.IngestJob.FromString(blob)
            source = job.spec.source
            if source.sha256 == sha256 or source.uri.endswith(sha256):
                ended = job.finished_at.ToMicroseconds() / 1e6
                last = ended if last is None else max(last, ended)
        return last

    # --- results ---
    def set_result(
        self,
        job_id: str,
        *,
        pii_audit: common_pb2.ArtifactRef,
        dataset_version: registry_pb2.DatasetVersion,
    ) -> None:
        self._query(
            "UPDATE jobs SET pii_audit = ?, dataset_version = ? WHERE id = ?",
            (pii_audit.SerializeToString(), dataset_version.SerializeToString(), job_id),
        )

    def result(
        self, job_id: str
    ) -> tuple[common_pb2.ArtifactRef | None, registry_pb2.DatasetVersion | None]:
        rows = self._query("SELECT pii_audit, dataset_version FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise self.not_found(job_id)
        audit_blob, version_blob = rows[0]
        audit = common_pb2.ArtifactRef.FromString(audit_blob) if audit_blob else None
        version = registry_pb2.DatasetVersion.FromString(version_blob) if version_blob else None
        return audit, version
