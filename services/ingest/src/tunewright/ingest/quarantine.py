"""The quarantine: the only place raw rows persist.

One folder per job under ``<data_dir>/ingest/quarantine/`` (mode 0700), one JSONL file in it
(mode 0600): ``{"line", "reason", "detail", "raw"}`` where ``raw`` is the row as read (text,
or ``raw_b64`` when it is not valid UTF-8). Folders older than the retention setting are
deleted by :func:`purge_expired` (the worker runs it before each job).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import IO


class QuarantineWriter:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "quarantine.jsonl"
        self.count = 0
        self._file: IO[str] | None = None

    def _open(self) -> IO[str]:
        if self._file is None:
            self.folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.folder, 0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        return self._file

    def write(self, line: int, reason: str, detail: str, raw: bytes) -> None:
        entry: dict[str, object] = {"line": line, "reason": reason, "detail": detail}
        try:
            entry["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_b64"] = base64.b64encode(raw).decode()
        self._open().write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def purge_expired(root: Path, retention_days: float, *, now: float | None = None) -> int:
    """Delete job folders under ``root`` older than ``retention_days``; returns how many."""
    if not root.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - retention_days * 86400
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder)
            removed += 1
    return removed
