"""Streaming readers: JSONL, CSV and Parquet files -> one :class:`RawRow` per input row.

Memory stays flat in the number of rows: JSONL and CSV are read line by line, Parquet one
record batch at a time. A row the reader itself cannot decode (bad UTF-8, bad JSON, a CSV row
with the wrong number of cells) comes out with ``error`` set, never raised, so the pipeline can
quarantine it and go on. ``line`` is the 1-based line number (JSONL, CSV: the line the row ends
on) or row number (Parquet).
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewright.core.errors import InvalidArgument
from tunewright.ingest.records import Reason

_PARQUET_MAGIC = b"PAR1"
_PARQUET_BATCH = 1024
# CSV cells can be large (whole conversations as JSON): lift the 128 KiB default
csv.field_size_limit(64 * 1024 * 1024)


class FileFormat(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


@dataclass(frozen=True, slots=True)
class RawRow:
    line: int
    #: the decoded row; None when ``error`` is set
    data: dict[str, Any] | None
    #: the row as read (for the quarantine file only)
    raw: bytes
    error: Reason | None = None
    detail: str = ""


def detect_file_format(path: Path, filename: str = "") -> FileFormat:
    """From the file name's extension, else from the content."""
    name = (filename or path.name).lower()
    for suffix, fmt in ((".jsonl", FileFormat.JSONL), (".ndjson", FileFormat.JSONL),
                        (".json", FileFormat.JSONL), (".csv", FileFormat.CSV),
                        (".parquet", FileFormat.PARQUET), (".pq", FileFormat.PARQUET)):  # fmt: skip
        if name.endswith(suffix):
            return fmt
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(_PARQUET_MAGIC):
        return FileFormat.PARQUET
    if head.lstrip()[:1] in (b"{", b"["):
        return FileFormat.JSONL
    return FileFormat.CSV


def read_rows(path: Path, fmt: FileFormat) -> Iterator[RawRow]:
    if fmt is FileFormat.JSONL:
        return _read_jsonl(path)
    if fmt is FileFormat.CSV:
        return _read_csv(path)
    return _read_parquet(path)


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as f:
        for number, raw_line in enumerate(f, start=1):
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are layout, not rows
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(number, None, raw, Reason.INVALID_UTF8, f"byte offset {exc.start}")
                continue
            try:
                data = json.loads(text)
            except ValueError as exc:
                detail = f"column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                yield RawRow(number, None, raw, Reason.INVALID_JSON, detail)
                continue
            if not isinstance(data, dict):
                yield RawRow(number, None, raw, Reason.NOT_AN_OBJECT, type(data).__name__)
                continue
            yield RawRow(number, data, raw)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _read_csv(path: Path) -> Iterator[RawRow]:
    # surrogateescape keeps reading past a bad byte; the row that holds it is quarantined
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidArgument(f"the CSV header cannot be read: {exc}") from None
        if _has_surrogates("".join(header)):
            raise InvalidArgument("the CSV header is not valid UTF-8")
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RawRow(reader.line_num, None, b"", Reason.INVALID_CSV, str(exc)[:80])
                continue
            line = reader.line_num
            raw = _csv_raw(cells)
            if not any(c.strip() for c in cells):
                continue
            if any(_has_surrogates(c) for c in cells):
                yield RawRow(line, None, raw, Reason.INVALID_UTF8)
                continue
            if len(cells) != len(header):
                detail = f"{len(cells)} cells, header has {len(header)}"
                yield RawRow(line, None, raw, Reason.INVALID_CSV, detail)
                continue
            data = {k: v for k, v in zip(header, cells, strict=True) if v != ""}
            yield RawRow(line, data, raw)


def _csv_raw(cells: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue().rstrip("\r\n").encode("utf-8", errors="surrogateescape")


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise InvalidArgument(f"not a readable Parquet file: {type(exc).__name__}") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            data = {k: v for k, v in row.items() if v is not None}
            raw = json.dumps(row, ensure_ascii=False, default=str).encode()
            yield RawRow(number, data, raw)
