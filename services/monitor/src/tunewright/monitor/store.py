"""The monitor's state in a per-host SQLite file: windows (what was handed to ingest, what the
detectors said) and detections. No traffic text is stored here: a window points at its
scrubbed dataset version's split artifacts."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
  id TEXT PRIMARY KEY,
  workspace TEXT NOT NULL,
  model_version_id TEXT NOT NULL,
  status TEXT NOT NULL,              -- pending | analysed | baseline | small | failed
  interactions INTEGER NOT NULL,
  window_start TEXT NOT NULL,
  window_end TEXT NOT NULL,
  dataset_version_id TEXT NOT NULL DEFAULT '',
  splits TEXT NOT NULL DEFAULT '[]', -- [[uri, media_type], ...] of the scrubbed window
  results TEXT NOT NULL DEFAULT '[]',
  detection_id TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_model ON windows (model_version_id, created_at);
CREATE TABLE IF NOT EXISTS detections (
  id TEXT PRIMARY KEY,
  workspace TEXT NOT NULL,
  model_version_id TEXT NOT NULL,
  window_id TEXT NOT NULL,
  results TEXT NOT NULL,
  action TEXT NOT NULL,
  pipeline_run_id TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL
);
-- raw window uploads the monitor put into the artifact store (they were not there): deleted
-- by the monitor once ingest has finished the window's job
CREATE TABLE IF NOT EXISTS window_uploads (
  window_id TEXT PRIMARY KEY,
  sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS canaries (
  run_id TEXT PRIMARY KEY,
  workspace TEXT NOT NULL,
  model_version_id TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Window:
    id: str
    workspace: str
    model_version_id: str
    status: str
    interactions: int
    window_start: str
    window_end: str
    dataset_version_id: str = ""
    splits: list[list[str]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    detection_id: str = ""
    error: str = ""
    created_at: str = ""


@dataclass
class Detection:
    id: str
    workspace: str
    model_version_id: str
    window_id: str
    results: list[dict[str, Any]]
    action: str
    pipeline_run_id: str = ""
    created_at: str = ""


class MonitorStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # --- windows ---

    def add_window(self, window: Window) -> bool:
        """Insert a pending window; False when it exists already (a redelivered window)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO windows (id, workspace, model_version_id, status, "
                "interactions, window_start, window_end, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    window.id,
                    window.workspace,
                    window.model_version_id,
                    window.status,
                    window.interactions,
                    window.window_start,
                    window.window_end,
                    _now(),
                ),
            )
            return cursor.rowcount == 1

    def drop_pending_window(self, window_id: str) -> None:
        """Forget a window whose hand-over to ingest failed (it is closed again when its
        messages come back)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM windows WHERE id = ? AND status = 'pending'", (window_id,)
            )

    def own_upload(self, window_id: str, sha256: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO window_uploads (window_id, sha256) VALUES (?, ?)",
                (window_id, sha256),
            )

    def owned_upload(self, window_id: str) -> str | None:
        """The sha256 of the window's raw upload, if the monitor put it and still owns it."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM window_uploads WHERE window_id = ?", (window_id,)
            ).fetchone()
        return str(row[0]) if row else None

    def forget_upload(self, window_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM window_uploads WHERE window_id = ?", (window_id,))

    def window(self, window_id: str) -> Window | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM windows WHERE id = ?", (window_id,)).fetchone()
        return _window(row) if row else None

    def windows(self, model_version_id: str) -> list[Window]:
        """A model version's windows, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM windows WHERE model_version_id = ? ORDER BY created_at, id",
                (model_version_id,),
            ).fetchall()
        return [_window(r) for r in rows]

    def finish_window(
        self,
        window_id: str,
        *,
        status: str,
        dataset_version_id: str = "",
        splits: list[list[str]] | None = None,
        results: list[dict[str, Any]] | None = None,
        detection_id: str = "",
        error: str = "",
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE windows SET status=?, dataset_version_id=?, splits=?, results=?, "
                "detection_id=?, error=? WHERE id=?",
                (
                    status,
                    dataset_version_id,
                    json.dumps(splits or []),
                    json.dumps(results or []),
                    detection_id,
                    error,
                    window_id,
                ),
            )

    # --- detections ---

    def add_detection(self, detection: Detection) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO detections (id, workspace, model_version_id, window_id, "
                "results, action, pipeline_run_id, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    detection.id,
                    detection.workspace,
                    detection.model_version_id,
                    detection.window_id,
                    json.dumps(detection.results),
                    detection.action,
                    detection.pipeline_run_id,
                    detection.created_at or _now(),
                ),
            )

    def detections(
        self, *, workspace: str = "", model_version_id: str = "", limit: int = 50, offset: int = 0
    ) -> list[Detection]:
        query, args = "SELECT * FROM detections WHERE 1=1", []
        if workspace:
            query, args = query + " AND workspace = ?", [*args, workspace]
        if model_version_id:
            query, args = query + " AND model_version_id = ?", [*args, model_version_id]
        query += " ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit, offset)).fetchall()
        return [Detection(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def last_retraining(self, model_version_id: str) -> Detection | None:
        found = [
            d
            for d in self.detections(model_version_id=model_version_id, limit=1000)
            if d.pipeline_run_id
        ]
        return found[0] if found else None

    # --- canaries ---

    def add_canary(self, run_id: str, workspace: str, model_version_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO canaries VALUES (?,?,?,?,?)",
                (run_id, workspace, model_version_id, "requested", _now()),
            )
            return cursor.rowcount == 1

    def canary_model(self, run_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT model_version_id, status FROM canaries WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None or row[1] != "requested" else str(row[0])

    def finish_canary(self, run_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE canaries SET status = ? WHERE run_id = ?", (status, run_id))

    def watched_models(self) -> list[tuple[str, str]]:
        """(workspace, model version id) of every model with traffic."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT workspace, model_version_id FROM windows"
            ).fetchall()
        return [(str(a), str(b)) for a, b in rows]


def _window(row: tuple[Any, ...]) -> Window:
    return Window(
        id=row[0],
        workspace=row[1],
        model_version_id=row[2],
        status=row[3],
        interactions=row[4],
        window_start=row[5],
        window_end=row[6],
        dataset_version_id=row[7],
        splits=json.loads(row[8]),
        results=json.loads(row[9]),
        detection_id=row[10],
        error=row[11],
        created_at=row[12],
    )
