"""Streaming readers: JSONL, CSV and Parquet files -> one :class:`RawRow` per input row.

Memory stays flat in the number of rows: JSONL and CSV are read line by line, Parquet one
record batch at a time. A row the reader itself cannot decode (bad UTF-8, bad JSON, a CSV row
with the wrong number of cells) comes out with ``error`` set, never raised, so the pipeline can
quarantine it and go on. ``line`` is the 1-based line number (JSONL, CSV: the line the row ends
on) or row number (Parquet).

Memory is flat in the size of a row too: a JSONL line, or a CSV record (all its lines), longer
than ``max_line_bytes`` (``ingest.max_line_bytes``, default :data:`DEFAULT_MAX_LINE_BYTES`) is
never held whole. The reader keeps its first :data:`QUARANTINE_HEAD_BYTES`, skips the rest in
small pieces (for CSV it follows the quoting to find where the record ends, exactly as the
:mod:`csv` module would) and yields it as ``line_too_long``. A Parquet row is checked by the
size of its JSON form (pyarrow decodes a record batch at once, so there the limit bounds what
is kept, not what is read). Files that cannot be read at all (a CSV header that is not UTF-8 or
is over the limit, a broken Parquet file) raise :class:`InvalidArgument`.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from tunewright.core.errors import InvalidArgument
from tunewright.ingest.records import Reason, load_json

_PARQUET_MAGIC = b"PAR1"
_PARQUET_BATCH = 1024
#: the longest JSONL line / CSV record / Parquet row (bytes) unless ``ingest.max_line_bytes``
DEFAULT_MAX_LINE_BYTES: Final = 1024 * 1024
#: the largest ``ingest.max_line_bytes`` (the csv module's field limit, set below)
MAX_LINE_BYTES_LIMIT: Final = 64 * 1024 * 1024
#: how much of a row over the limit the quarantine keeps
QUARANTINE_HEAD_BYTES: Final = 4096
_SKIP_CHUNK = 64 * 1024
# CSV cells can be large (whole conversations as JSON): lift the 128 KiB default; records are
# bounded by max_line_bytes before the csv module sees them
csv.field_size_limit(MAX_LINE_BYTES_LIMIT)


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


def read_rows(
    path: Path, fmt: FileFormat, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[RawRow]:
    """Every row of ``path``; see the module docstring for ``max_line_bytes``."""
    if not 0 < max_line_bytes <= MAX_LINE_BYTES_LIMIT:
        raise ValueError(
            f"max_line_bytes must be in [1, {MAX_LINE_BYTES_LIMIT}], got {max_line_bytes}"
        )
    if fmt is FileFormat.JSONL:
        return _read_jsonl(path, max_line_bytes)
    if fmt is FileFormat.CSV:
        return _read_csv(path, max_line_bytes)
    return _read_parquet(path, max_line_bytes)


def _too_long(line: int, head: bytes, limit: int) -> RawRow:
    head = head[:QUARANTINE_HEAD_BYTES]
    detail = f"over {limit} bytes (ingest.max_line_bytes); the first {len(head)} are kept"
    return RawRow(line, None, head, Reason.LINE_TOO_LONG, detail)


def _read_jsonl(path: Path, limit: int) -> Iterator[RawRow]:
    with path.open("rb") as f:
        number = 0
        while True:
            # limit + 2: the line, its \r\n, and one byte to tell "exactly the limit" from "over"
            raw_line = f.readline(limit + 2)
            if not raw_line:
                return
            number += 1
            if not raw_line.endswith(b"\n") and len(raw_line) == limit + 2:
                while (part := f.readline(_SKIP_CHUNK)) and not part.endswith(b"\n"):
                    pass  # the rest of the line, never held whole
                yield _too_long(number, raw_line, limit)
                continue
            # the line without its end, \n or \r\n (other \r are the line's own)
            end = 2 if raw_line.endswith(b"\r\n") else 1 if raw_line.endswith(b"\n") else 0
            if len(raw_line) - end > limit:
                yield _too_long(number, raw_line, limit)
                continue
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are layout, not rows
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(number, None, raw, Reason.INVALID_UTF8, f"byte offset {exc.start}")
                continue
            try:
                data = load_json(text)
            except ValueError as exc:
                detail = f"column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                yield RawRow(number, None, raw, Reason.INVALID_JSON, detail or str(exc)[:80])
                continue
            if not isinstance(data, dict):
                yield RawRow(number, None, raw, Reason.NOT_AN_OBJECT, type(data).__name__)
                continue
            yield RawRow(number, data, raw)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


class _RecordTooLong(Exception):
    """Raised through :func:`csv.reader` by :class:`_CsvLines`; the reader resets itself
    at its next call, so reading goes on with the next record."""

    def __init__(self, line: int, head: bytes) -> None:
        super().__init__(line)
        self.line = line
        self.head = head


# quoting states of csv's default dialect (see _Quoting)
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)
_QUOTE, _COMMA = ord('"'), ord(",")
_EOL = re.compile(rb"\r\n?|\n")
_UNQUOTED_STOP = re.compile(rb'["\r\n]')


class _Quoting:
    """Whether a CSV record goes on past a line end, tracked as the :mod:`csv` module's parser
    (default dialect: ``,``, ``"``, doubled quotes, not strict) tracks it: only a quote that
    opens a field starts quoting, and a record continues past a line end only inside quotes.
    Fed with pieces of a line, so an overlong line is never held whole."""

    def __init__(self) -> None:
        self.state = _FIELD_START

    def feed(self, data: bytes) -> None:
        state, i, n = self.state, 0, len(data)
        if state != _QUOTED and n and _QUOTE not in data:
            # without quotes only commas move: the last byte says where the piece ends
            self.state = _FIELD_START if data[-1] == _COMMA else _UNQUOTED
            return
        while i < n:
            if state == _QUOTED:
                j = data.find(b'"', i)
                if j < 0:
                    break
                state, i = _QUOTE_IN_QUOTED, j + 1
            elif state == _UNQUOTED:
                j = data.find(b",", i)
                if j < 0:
                    break
                state, i = _FIELD_START, j + 1
            else:  # a field's first byte, or the byte after a quote inside quotes
                c = data[i]
                if c == _QUOTE:
                    state = _QUOTED
                elif c == _COMMA:
                    state = _FIELD_START
                else:
                    state = _UNQUOTED
                i += 1
        self.state = state

    def line_ends(self) -> bool:
        """At a line end: True when the record ends here (and the next one starts)."""
        if self.state == _QUOTED:
            return False
        self.state = _FIELD_START
        return True


class _CsvLines:
    """The lines of a CSV file (``\\n``, ``\\r\\n`` or ``\\r``, as text mode with
    ``newline=""`` splits them) for :func:`csv.reader`, decoded with ``surrogateescape``.

    The pieces of one record may add up to ``limit`` bytes (its last line end not counted).
    The line that goes over is not returned: the rest of the record is skipped in pieces and
    :class:`_RecordTooLong` raised instead. :meth:`start_record` before each record."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self._f = f
        self.limit = limit
        self.line = 0  # physical lines read so far
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._quoting = _Quoting()
        self._record_bytes = 0
        self._head = b""

    def start_record(self) -> None:
        self._record_bytes = 0
        self._head = b""
        self._quoting = _Quoting()

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        room = self.limit - self._record_bytes
        piece, ended = self._readline(room)
        if not piece:
            raise StopIteration
        self.line += 1
        content = len(piece) - len(_terminator(piece)) if ended else len(piece)
        if len(self._head) < QUARANTINE_HEAD_BYTES:
            self._head += piece[: QUARANTINE_HEAD_BYTES - len(self._head)]
        if not ended or content > room:
            self._skip_record(piece, ended)
            raise _RecordTooLong(self.line, self._head)
        self._record_bytes += len(piece)
        # the csv module decides where records end; this follows along (for _skip_record)
        quoting = self._quoting
        if quoting.state == _QUOTED or _QUOTE in piece:
            quoting.feed(piece[:content])
            quoting.line_ends()
        else:
            quoting.state = _FIELD_START  # an unquoted line end ends the record
        return piece.decode("utf-8", errors="surrogateescape")

    def _skip_record(self, piece: bytes, ended: bool) -> None:
        """Read on to the end of the record ``piece`` is part of, a buffer at a time: the
        quoting is followed with ``find``, line ends are counted, nothing is kept."""
        quoting = self._quoting
        quoting.feed(piece[: len(piece) - len(_terminator(piece))] if ended else piece)
        if ended:
            if quoting.line_ends():
                return
            self.line += 1  # the record goes on, on the next line
        while True:
            buf, i = self._buf, self._pos
            # a \r at the end may be half of a \r\n: leave it for the next read
            stop = len(buf) - 1 if buf.endswith(b"\r") and not self._eof else len(buf)
            while i < stop:
                state = quoting.state
                if state == _QUOTED:
                    j = buf.find(b'"', i, stop)
                    self.line += _line_ends(buf, i, stop if j < 0 else j)
                    quoting.state, i = (_QUOTED, stop) if j < 0 else (_QUOTE_IN_QUOTED, j + 1)
                    continue
                found = _UNQUOTED_STOP.search(buf, i, stop)
                j = found.start() if found else stop
                if j > i:  # no quote, no line end before j: only commas moved the state
                    state = _FIELD_START if buf[j - 1] == _COMMA else _UNQUOTED
                if found is None:
                    quoting.state, i = state, stop
                elif buf[j] == _QUOTE:  # opens a field, doubles one, or is a literal
                    opens = state in (_FIELD_START, _QUOTE_IN_QUOTED)
                    quoting.state, i = (_QUOTED if opens else _UNQUOTED), j + 1
                else:  # a line end outside quotes: the record ends with it
                    self._pos = j + (2 if buf[j : j + 2] == b"\r\n" else 1)
                    quoting.state = _FIELD_START
                    return
            self._pos = i
            if self._eof:
                return
            chunk = self._f.read(_SKIP_CHUNK)
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
            self._eof = not chunk

    def _readline(self, cap: int) -> tuple[bytes, bool]:
        """The next line with its line end and True; or, when the line runs on past ``cap``
        bytes, its next ``cap`` bytes (at least one) and False. ``b""`` at the end."""
        cap = max(cap, 1)
        if self._pos >= len(self._buf) and not self._eof:
            # the common case, in C: nothing buffered, and no \r but in a final \r\n
            piece = self._f.readline(cap + 2)
            cr = piece.find(b"\r")
            if cr < 0 or (cr == len(piece) - 2 and piece.endswith(b"\n")):
                if piece.endswith(b"\n") or len(piece) < cap + 2:
                    return piece, True  # a line, the last one without a line end, or b""
                return piece, False  # content of cap + 2 bytes and more
            self._buf, self._pos = piece, 0  # a bare \r: split below
        while True:
            end = min(len(self._buf), self._pos + cap + 2)
            match = _EOL.search(self._buf, self._pos, end)
            if match and (match.end() < len(self._buf) or self._eof or match.group() != b"\r"):
                if match.start() - self._pos <= cap:
                    return self._take(match.end()), True
            if len(self._buf) - self._pos > cap + 1:
                return self._take(self._pos + cap), False
            if self._eof:
                return self._take(len(self._buf)), True
            chunk = self._f.read(_SKIP_CHUNK)
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
            self._eof = not chunk

    def _take(self, end: int) -> bytes:
        piece = self._buf[self._pos : end]
        self._pos = end
        return piece


def _line_ends(buf: bytes, start: int, stop: int) -> int:
    """How many lines end in ``buf[start:stop]`` (``\\r\\n`` counts once)."""
    return (
        buf.count(b"\n", start, stop)
        + buf.count(b"\r", start, stop)
        - buf.count(b"\r\n", start, stop)
    )


def _terminator(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        return b"\r\n" if line.endswith(b"\r\n") else b"\n"
    return b"\r" if line.endswith(b"\r") else b""


def _read_csv(path: Path, limit: int) -> Iterator[RawRow]:
    # surrogateescape keeps reading past a bad byte; the row that holds it is quarantined
    with path.open("rb") as f:
        lines = _CsvLines(f, limit)
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            raise InvalidArgument(
                f"the CSV header is over {limit} bytes (ingest.max_line_bytes)"
            ) from None
        except csv.Error as exc:
            raise InvalidArgument(f"the CSV header cannot be read: {exc}") from None
        if _has_surrogates("".join(header)):
            raise InvalidArgument("the CSV header is not valid UTF-8")
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        while True:
            lines.start_record()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except _RecordTooLong as exc:
                yield _too_long(exc.line, exc.head, limit)
                continue
            except csv.Error as exc:
                yield RawRow(lines.line, None, b"", Reason.INVALID_CSV, str(exc)[:80])
                continue
            line = lines.line
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


def _read_parquet(path: Path, limit: int) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise InvalidArgument(f"not a readable Parquet file: {type(exc).__name__}") from None
    number = 0
    batches = parquet.iter_batches(batch_size=_PARQUET_BATCH)
    while True:
        try:
            batch = next(batches, None)
            rows = batch.to_pylist() if batch is not None else []
        except Exception as exc:  # a corrupt page or row group further on
            raise InvalidArgument(
                f"the Parquet file cannot be read after row {number}: {type(exc).__name__}"
            ) from None
        if batch is None:
            return
        for row in rows:
            number += 1
            raw = json.dumps(row, ensure_ascii=False, default=str).encode(
                "utf-8", errors="surrogateescape"
            )
            if len(raw) > limit:
                yield _too_long(number, raw, limit)
                continue
            data = {k: v for k, v in row.items() if v is not None}
            yield RawRow(number, data, raw)
