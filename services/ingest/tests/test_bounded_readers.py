"""Rows are bounded: a JSONL line or CSV record over ``ingest.max_line_bytes`` is quarantined
(``line_too_long``, with its line number) without being held in memory, JSON that nests too
deep or holds lone surrogates is not a row, and ``max_chars`` has no "unlimited"."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import Registries
from tunewright.ingest.convert import curation_config
from tunewright.ingest.pipeline import CurationConfig, curate
from tunewright.ingest.quarantine import QuarantineWriter
from tunewright.ingest.readers import (
    DEFAULT_MAX_LINE_BYTES,
    QUARANTINE_HEAD_BYTES,
    FileFormat,
    read_rows,
)
from tunewright.ingest.records import DEFAULT_MAX_CHARS, MAX_JSON_DEPTH, load_json
from tunewright.ingest.settings import IngestSection
from tunewright.ingest.v1 import ingest_pb2

ROW = {"prompt": "How do I reset my password?", "completion": "Open Settings, then Reset."}


def _rows(path: Path, fmt: FileFormat, limit: int) -> list[tuple[int, str | None]]:
    return [
        (r.line, r.error.value if r.error else None)
        for r in read_rows(path, fmt, max_line_bytes=limit)
    ]


def _jsonl(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def test_a_jsonl_line_over_the_limit_is_quarantined_with_its_line(tmp_path: Path) -> None:
    good = json.dumps(ROW).encode()
    limit = len(good) + 30
    source = tmp_path / "rows.jsonl"
    huge = json.dumps({**ROW, "prompt": "x" * 10 * limit}).encode()
    exact = json.dumps({**ROW, "pad": ""}).encode()
    exact = exact[:-2] + b" " * (limit - len(exact)) + exact[-2:]  # exactly `limit` bytes
    assert len(exact) == limit
    source.write_bytes(
        _jsonl(good, huge, b"", good, exact, exact + b" ", b"x" * (limit + 1)) + b"z" * limit * 3
    )
    assert _rows(source, FileFormat.JSONL, limit) == [
        (1, None),
        (2, "line_too_long"),
        (4, None),
        (5, None),  # exactly the limit is fine, \r\n or \n not counted
        (6, "line_too_long"),
        (7, "line_too_long"),
        (8, "line_too_long"),  # the last line, without a line end
    ]
    (row,) = [r for r in read_rows(source, FileFormat.JSONL, max_line_bytes=limit) if r.line == 2]
    assert row.raw == huge[: limit + 2][:QUARANTINE_HEAD_BYTES]
    assert "ingest.max_line_bytes" in row.detail and str(limit) in row.detail
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(exact + b"\r\n" + good + b"\r\n")
    assert _rows(crlf, FileFormat.JSONL, limit) == [(1, None), (2, None)]


def test_a_huge_line_is_never_held_whole(tmp_path: Path) -> None:
    source = tmp_path / "huge.jsonl"
    with source.open("wb") as f:
        f.write(json.dumps(ROW).encode() + b"\n")
        f.write(b'{"prompt": "')
        for _ in range(64):
            f.write(b"a" * (1 << 20))  # 64 MiB on one line
        f.write(b'", "completion": "x"}\n')
        f.write(json.dumps(ROW).encode() + b"\n")
    for fmt in (FileFormat.JSONL, FileFormat.CSV):
        if fmt is FileFormat.CSV:
            source = tmp_path / "huge.csv"
            with source.open("wb") as f:
                f.write(b'prompt,completion\nhi,there\n"')
                for _ in range(32):
                    f.write(b"a,b\n" * (1 << 18))  # 32 MiB inside one quoted field
                f.write(b'",x\nbye,now\n')
        tracemalloc.start()
        rows = _rows(source, fmt, DEFAULT_MAX_LINE_BYTES)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [e for _, e in rows] == [None, "line_too_long", None], fmt
        # JSONL holds the limit's bytes; the csv module holds a record as 4-byte characters
        bound = (3 if fmt is FileFormat.JSONL else 6) * DEFAULT_MAX_LINE_BYTES
        assert peak < bound, (fmt, peak)  # of 64 MiB and 32 MiB on one line / in one record


def test_csv_records_are_bounded_as_a_whole_and_quoting_is_followed(tmp_path: Path) -> None:
    limit = 64
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["prompt", "completion"])
    writer.writerow(["hi", "there"])  # line 2
    writer.writerow(["x" * 200, "y"])  # line 3: one long line
    writer.writerow(["multi\n" * 20, 'with "quotes",\n and commas'])  # lines 4-25: long in total
    writer.writerow(["after", "it"])  # line 26
    writer.writerow(['"', "x" * 100 + '\n"",'])  # lines 27-28: a quote in a quoted field
    writer.writerow(["short\nbut two lines", "ok"])  # lines 29-30
    source = tmp_path / "rows.csv"
    source.write_text(buf.getvalue() + 'a"b,' + "z" * 100 + "\nend,here")
    rows = _rows(source, FileFormat.CSV, limit)
    assert rows == [
        (2, None),
        (3, "line_too_long"),
        (25, "line_too_long"),
        (26, None),
        (28, "line_too_long"),
        (30, None),
        (31, "line_too_long"),  # a quote inside an unquoted field does not quote
        (32, None),
    ]
    # what the csv module makes of the same file, without a limit: the same records
    with source.open(newline="") as f:
        reference = list(csv.reader(f))
    assert len(reference) - 1 == len(rows)
    with pytest.raises(InvalidArgument, match="CSV header is over 64 bytes"):
        (tmp_path / "h.csv").write_text(",".join(f"column_{i}" for i in range(20)) + "\n1\n")
        list(read_rows(tmp_path / "h.csv", FileFormat.CSV, max_line_bytes=limit))


def test_a_parquet_row_over_the_limit_is_quarantined(tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    table = pa.Table.from_pylist(
        [ROW, {**ROW, "prompt": "x" * 5000}, {**ROW, "blob": b"\x00\xff"}],
    )
    pq.write_table(table, source)
    assert _rows(source, FileFormat.PARQUET, 1000) == [(1, None), (2, "line_too_long"), (3, None)]


def test_json_that_nests_too_deep_or_holds_lone_surrogates_is_not_a_row(tmp_path: Path) -> None:
    assert load_json('{"a": [[1]]}') == {"a": [[1]]}
    for bad in (
        "[" * 100_000 + "]" * 100_000,  # past the interpreter's recursion limit
        '{"a": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}",
        '{"a": "\\ud800"}',
        '{"\\udfff": 1}',
    ):
        with pytest.raises(ValueError):
            load_json(bad)
    assert load_json('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a pair is fine
    source = tmp_path / "rows.jsonl"
    deep = {"prompt": "x", "completion": "y", "meta": json.loads("[" * 40 + "]" * 40)}
    source.write_bytes(
        _jsonl(
            json.dumps(ROW).encode(),
            b"[" * 5000 + b"]" * 5000,
            b'{"prompt": "\\ud800", "completion": "y"}',
            json.dumps(deep).encode(),
        )
    )
    rows = list(read_rows(source, FileFormat.JSONL))
    assert [(r.line, r.error) for r in rows] == [
        (1, None),
        (2, "invalid_json"),
        (3, "invalid_json"),
        (4, None),
    ]
    csv_source = tmp_path / "cells.csv"
    csv_source.write_text(
        'messages\n"' + "[" * 5000 + '"\n"[{""role"": ""user"", ""content"": ""\\ud800""}]"\n'
    )
    result = curate(
        csv_source,
        CurationConfig(pii=None, near_dedup=False, eval_fraction=0.0),
        work_dir=tmp_path / "out",
        quarantine=QuarantineWriter(tmp_path / "q"),
        scrubber=None,
    )
    assert dict(result.counts.quarantined_by_reason) == {"bad_type": 2}


def test_counts_add_up_with_rows_over_the_limit(tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    lines = [json.dumps({**ROW, "prompt": f"Question {i}?"}).encode() for i in range(5)]
    lines.insert(2, json.dumps({**ROW, "prompt": "p" * 5000}).encode())
    source.write_bytes(_jsonl(*lines))
    quarantine = QuarantineWriter(tmp_path / "q")
    result = curate(
        source,
        CurationConfig(pii=None, near_dedup=False, eval_fraction=0.0, max_line_bytes=1000),
        work_dir=tmp_path / "out",
        quarantine=quarantine,
        scrubber=None,
    )
    c = result.counts
    assert (c.total, c.accepted, c.quarantined) == (6, 5, 1)
    assert c.accepted + c.quarantined + c.duplicates + c.filtered == c.total
    assert dict(c.quarantined_by_reason) == {"line_too_long": 1}
    (entry,) = [json.loads(line) for line in quarantine.path.read_text().splitlines()]
    assert entry["line"] == 3 and entry["reason"] == "line_too_long"
    assert len(entry["raw"]) <= QUARANTINE_HEAD_BYTES


def test_max_chars_zero_means_the_servers_maximum(registries: Registries) -> None:
    section = IngestSection(max_chars=5000, max_line_bytes=4096)
    config = curation_config(ingest_pb2.IngestSpec(dataset="d"), section, registries)
    assert (config.max_chars, config.max_line_bytes) == (5000, 4096)
    lower = curation_config(ingest_pb2.IngestSpec(dataset="d", max_chars=300), section, registries)
    assert lower.max_chars == 300
    for value in (5001, -1):
        with pytest.raises(InvalidArgument) as err:
            curation_config(
                ingest_pb2.IngestSpec(dataset="d", max_chars=value), section, registries
            )
        (violation,) = err.value.field_violations
        assert violation.field == "spec.max_chars"
        assert "ingest.max_chars = 5000" in violation.description
    assert IngestSection().max_chars == DEFAULT_MAX_CHARS
    assert CurationConfig().max_chars == DEFAULT_MAX_CHARS
    with pytest.raises(ValueError, match="max_chars must be > 0"):
        CurationConfig(max_chars=0)
    for bad in ({"max_chars": 0}, {"max_line_bytes": 0}, {"max_line_bytes": 1 << 30}):
        with pytest.raises(ValueError):
            IngestSection(**bad)
