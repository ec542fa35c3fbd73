"""Fuzzing every ingest reader: JSONL, CSV and Parquet, and the format detection in front.

Inputs are hostile on purpose: random bytes, random JSON values per line (deep nesting, lone
surrogate escapes, huge numbers), lines and CSV records far over ``max_line_bytes``, invalid
UTF-8, CSV with odd quoting and every line end (``\\n``, ``\\r\\n``, bare ``\\r``), nested
Parquet columns, truncated files. Every input goes through the whole pipeline
(:func:`tunewright.ingest.pipeline.curate`, no PII engine) and must hold to:

- nothing raises but the domain's refusal of a file that cannot be read at all
  (:class:`InvalidArgument`: an unreadable CSV header, a broken Parquet file); a bad row is
  quarantined, never raised;
- every row is accounted once: accepted + quarantined + duplicates + filtered = rows in, where
  "rows in" is counted independently (non-blank JSONL lines; CSV records as the :mod:`csv`
  module parses the file with no limit; the Parquet table's rows), and the row log names no
  line twice;
- a planted e-mail address never reaches a log record.

Each case records its figures (inputs fuzzed and handled, rows in = rows accounted).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewright.core.errors import InvalidArgument
from tunewright.ingest.pipeline import CurationConfig, curate
from tunewright.ingest.quarantine import QuarantineWriter
from tunewright.ingest.readers import FileFormat, detect_file_format, read_rows

from .conftest import Figures

EMAIL = "maria.lopez.fuzz@example.com"
LIMIT = 600  # max_line_bytes of these runs: huge lines stay cheap to make
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [f"Please reset the password of {EMAIL}", "Open Settings, then \"Reset\".", "a,b\nc",
         'quote " inside', "line\r\nend", "\r", "", "  "]
    ),
)  # fmt: skip
HUGE = st.integers(LIMIT + 1, 3 * LIMIT).map(lambda n: ("x" * n)[: n - len(EMAIL)] + EMAIL)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
TURN = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]), "content": TEXT}
)
ROW = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(TURN, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT}),
    st.fixed_dictionaries({"prompt": TEXT, "chosen": TEXT, "rejected": TEXT}),
    st.fixed_dictionaries({"instruction": TEXT, "output": TEXT, "input": JSON_VALUE}),
    st.fixed_dictionaries({"completion": TEXT, "label": JSON_VALUE}),
    st.fixed_dictionaries({"prompt": HUGE, "completion": TEXT}),
    st.dictionaries(st.sampled_from(["messages", "prompt", EMAIL, "x"]), JSON_VALUE, max_size=3),
)
RAW_JSON = st.sampled_from(
    [
        b"[" * 3000 + b"]" * 3000,  # past the interpreter's recursion limit
        b'{"prompt": ' + b"[" * 70 + b"]" * 70 + b', "completion": "c"}',
        b'{"prompt": "\\ud800", "completion": "lone surrogate"}',
        b'{"\\udfff": "a key"}',
        b'{"prompt": "a", "completion": ' + b"9" * 5000 + b"}",  # past int digits limit
        b'{"prompt": "a", "completion": NaN}',
        b'"just a string"',
        b"\xff\xfe{}",
        b'{"prompt": "' + EMAIL.encode() + b'", "completion": "\xc3"}',  # invalid UTF-8
        b"\x00\x01\x02",
        b"   ",
    ]
)
LINE = st.one_of(
    ROW.map(lambda row: json.dumps(row, ensure_ascii=False).encode()),
    JSON_VALUE.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=60),
    RAW_JSON,
    HUGE.map(lambda text: text.encode()),
)


@dataclass
class Tally:
    """Sums over the examples of one case."""

    inputs: int = 0
    handled: int = 0
    refused_files: int = 0
    rows_in: int = 0
    rows_accounted: int = 0
    duplicates: int = 0
    reasons: Counter[str] | None = None

    def outcome(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted((self.reasons or Counter()).items()))
        files = f"; {self.refused_files} files refused whole" if self.refused_files else ""
        return f"quarantined: {reasons or 'none'}{files}"


def _curate(source: Path, work: Path, caplog: pytest.LogCaptureFixture, name: str = "") -> Any:
    """The pipeline on ``source``: counts, quarantine entries and row log lines. The planted
    e-mail must not be in any log record."""
    caplog.clear()
    quarantine = QuarantineWriter(work / "q")
    try:
        result = curate(
            source,
            CurationConfig(
                pii=None,
                near_dedup=False,
                eval_fraction=0.2,
                max_line_bytes=LIMIT,
                source_name=name,
            ),
            work_dir=work / "out",
            quarantine=quarantine,
            scrubber=None,
        )
    finally:
        _no_email_in_logs(caplog)
    # split on \n only: the quarantine keeps U+2028, U+0085 ... raw, which splitlines() splits on
    entries = [json.loads(x) for x in _lines(quarantine.path)] if quarantine.path.exists() else []
    row_log = [json.loads(x) for x in _lines(result.files["row_log.jsonl"])]
    return result.counts, entries, row_log


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_bytes().decode("utf-8").split("\n") if x]


def _no_email_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert EMAIL not in record.getMessage(), record.getMessage()
        assert EMAIL not in repr(record.__dict__)


def _account(
    tally: Tally, counts: Any, entries: list[Any], row_log: list[Any], rows_in: int
) -> None:
    fates = counts.accepted + counts.quarantined + counts.duplicates + counts.filtered
    assert counts.total == rows_in, (counts.to_dict(), rows_in)
    assert fates == rows_in, counts.to_dict()
    assert counts.train + counts.eval == counts.accepted
    assert len(entries) == counts.quarantined
    assert sum(counts.quarantined_by_reason.values()) == counts.quarantined
    assert len(row_log) == counts.total - counts.accepted
    lines = Counter(entry["line"] for entry in row_log)
    tally.duplicates += sum(n - 1 for n in lines.values())
    assert all(n == 1 for n in lines.values()), "a line was given two fates"
    assert all(e["line"] >= 1 and e["reason"] for e in entries)
    tally.rows_in += rows_in
    tally.rows_accounted += fates
    tally.reasons = (tally.reasons or Counter()) + Counter(counts.quarantined_by_reason)


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_reader(figures: Figures, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tally = Tally()

    @settings(FUZZ, max_examples=300)
    @given(lines=st.lists(LINE, max_size=14), ending=st.sampled_from([b"\n", b"\r\n"]))
    def run(lines: list[bytes], ending: bytes) -> None:
        tally.inputs += 1
        lines = [line.replace(b"\n", b" ") for line in lines]
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "rows.jsonl"
            source.write_bytes(ending.join(lines) + (ending if lines else b""))
            counts, entries, row_log = _curate(source, Path(tmp), caplog)
        # rows in: every line that is not blank (a blank one is layout), or is over the limit
        rows_in = sum(1 for line in lines if line.rstrip(b"\r\n").strip() or len(line) > LIMIT)
        _account(tally, counts, entries, row_log, rows_in)
        over = [e for e in entries if e["reason"] == "line_too_long"]
        assert len(over) == sum(1 for line in lines if len(line) > LIMIT)
        tally.handled += 1

    run()
    assert tally.reasons and tally.reasons["line_too_long"] and tally.reasons["invalid_json"]
    figures.record(
        "ingest jsonl reader",
        "fuzz",
        injected=tally.inputs,
        survived=tally.handled,
        rows_in=tally.rows_in,
        rows_accounted=tally.rows_accounted,
        duplicates=tally.duplicates,
        outcome=tally.outcome(),
    )


# --- CSV ----------------------------------------------------------------------------------

HEADERS = st.sampled_from(
    [["prompt", "completion"], ["messages"], ["instruction", "input", "output"],
     ["prompt", "chosen", "rejected"], ["completion", "label"], ["prompt", "completion", EMAIL]]
)  # fmt: skip
CELL = st.one_of(
    TEXT,
    HUGE,
    st.lists(TURN, min_size=1, max_size=3).map(json.dumps),
    st.sampled_from(['"', '""', 'a"b', '"a"b', ",", "\n", "\r", "\ufeff", "[" * 2000]),
    st.just('[{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]'),
)
QUOTING = st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A CSV file: a header, then rows written by csv.writer with random quoting and line
    ends, or joined raw (unbalanced and stray quotes), or random bytes."""
    header = draw(HEADERS)
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    out = io.StringIO()
    csv.writer(out, lineterminator=ending).writerow(header)
    parts = [out.getvalue().encode()]
    if draw(st.booleans()) and draw(st.booleans()):
        parts = [draw(st.binary(max_size=40)) + ending.encode()]  # a header of random bytes
    for _ in range(draw(st.integers(0, 10))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        cells = draw(st.lists(CELL, min_size=max(width, 0), max_size=max(width, 0)))
        how = draw(st.sampled_from(["writer", "writer", "raw", "bytes"]))
        if how == "writer":
            out = io.StringIO()
            csv.writer(out, quoting=draw(QUOTING), lineterminator=ending).writerow(cells)
            parts.append(out.getvalue().encode("utf-8", errors="surrogatepass"))
        elif how == "raw":
            parts.append((",".join(cells) + ending).encode("utf-8", errors="surrogatepass"))
        else:
            parts.append(draw(st.binary(max_size=60)) + ending.encode())
    data = b"".join(parts)
    return data[: -len(ending)] if draw(st.booleans()) and data.endswith(ending.encode()) else data


def csv_rows_in(data: bytes, limit: int) -> int | None:
    """Rows the CSV reader must yield, by the csv module reading the whole file with no limit
    (None: the file is refused). A record's size is its bytes but its last line end."""
    lines = data.splitlines(keepends=True)  # \n, \r\n, \r: as text mode with newline=""
    reader = csv.reader(line.decode("utf-8", errors="surrogateescape") for line in lines)
    rows, start, header = 0, 0, True
    for cells in reader:
        record = lines[start : reader.line_num]
        start = reader.line_num
        size = sum(map(len, record)) - (len(record[-1]) - len(record[-1].rstrip(b"\r\n")))
        if header:
            if size > limit or any("\udc80" <= ch <= "\udcff" for ch in "".join(cells)):
                return None
            header = False
        elif size > limit or any(c.strip() for c in cells):
            rows += 1
    return rows


def test_csv_reader(figures: Figures, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tally = Tally()
    csv.field_size_limit(1 << 30)  # the reference reads with no limit (the reader sets its own)

    @settings(FUZZ, max_examples=400)
    @given(data=csv_files())
    def run(data: bytes) -> None:
        tally.inputs += 1
        expected = csv_rows_in(data, LIMIT)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "rows.csv"
            source.write_bytes(data)
            try:
                counts, entries, row_log = _curate(source, Path(tmp), caplog)
            except InvalidArgument as exc:
                assert expected is None, (exc.message, expected)
                assert "CSV header" in exc.message and EMAIL not in exc.message
                tally.refused_files += 1
                tally.handled += 1
                return
        assert expected is not None, "a file the csv module reads was refused"
        _account(tally, counts, entries, row_log, expected)
        tally.handled += 1

    run()
    try:
        assert tally.reasons and tally.reasons["line_too_long"] and tally.reasons["invalid_csv"]
    finally:
        csv.field_size_limit(64 * 1024 * 1024)
    figures.record(
        "ingest csv reader",
        "fuzz",
        injected=tally.inputs,
        survived=tally.handled,
        rows_in=tally.rows_in,
        rows_accounted=tally.rows_accounted,
        duplicates=tally.duplicates,
        outcome=tally.outcome(),
    )


def test_csv_quoting_against_the_csv_module(figures: Figures) -> None:
    """Quote-dense CSV under a tiny limit: where the reader skips an overlong record it must
    land where the csv module ends that record, or every later row would shift."""
    tally = Tally()
    csv.field_size_limit(1 << 30)
    alphabet = st.sampled_from(
        ['"', '"', '"', ",", ",", "a", "a", "a", "bb", "\n", "\r", "\r\n", '""', '",', ',"']
    )

    @settings(FUZZ, max_examples=500)
    @given(text=st.lists(alphabet, max_size=150).map("".join), limit=st.integers(5, 14))
    def run(text: str, limit: int) -> None:
        tally.inputs += 1
        data = b"h1,h2\n" + text.encode()
        expected = csv_rows_in(data, limit)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "rows.csv"
            source.write_bytes(data)
            rows = list(read_rows(source, FileFormat.CSV, max_line_bytes=limit))
        assert len(rows) == expected, (data, limit)
        reasons = Counter(r.error.value for r in rows if r.error is not None)
        tally.reasons = (tally.reasons or Counter()) + reasons
        tally.rows_in += expected or 0
        tally.rows_accounted += len(rows)
        tally.handled += 1

    try:
        run()
    finally:
        csv.field_size_limit(64 * 1024 * 1024)
    assert tally.reasons and tally.reasons["line_too_long"]
    figures.record(
        "ingest csv quoting vs csv module",
        "fuzz",
        injected=tally.inputs,
        survived=tally.handled,
        rows_in=tally.rows_in,
        rows_accounted=tally.rows_accounted,
        duplicates=0,
        outcome=f"record counts equal the csv module's; {tally.outcome()}",
    )


# --- Parquet ------------------------------------------------------------------------------

COLUMNS: dict[str, tuple[Any, Any]] = {
    "prompt": (pa.string(), st.none() | TEXT | HUGE),
    "completion": (pa.string(), st.none() | TEXT),
    "messages": (
        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
        st.none() | st.lists(TURN, max_size=3),
    ),
    "label": (pa.bool_(), st.none() | st.booleans()),
    "ticket": (pa.int64(), st.none() | st.integers(-(2**63), 2**63 - 1)),
    "blob": (pa.binary(), st.none() | st.binary(max_size=20)),
    "score": (pa.float64(), st.none() | st.floats()),
    "tags": (pa.list_(pa.string()), st.none() | st.lists(TEXT, max_size=3)),
    "meta": (pa.struct([("a", pa.int32()), ("b", pa.string())]), st.none()),
    "when": (pa.timestamp("ms"), st.none() | st.integers(0, 2**40)),
}


@st.composite
def parquet_files(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """(file, rows in; None when the file was damaged on purpose)."""
    names = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=5, unique=True))
    n = draw(st.integers(0, 8))
    table = pa.table(
        {name: pa.array([draw(COLUMNS[name][1]) for _ in range(n)], type=COLUMNS[name][0])
         for name in names}
    )  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=draw(st.integers(1, 4)))
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "random"]))
    if damage == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))], None
    if damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :], None
    if damage == "random":
        return b"PAR1" + draw(st.binary(max_size=80)), None
    return data, n


def test_parquet_reader(figures: Figures, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tally = Tally()

    @settings(FUZZ, max_examples=150)
    @given(case=parquet_files())
    def run(case: tuple[bytes, int | None]) -> None:
        data, rows_in = case
        tally.inputs += 1
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "rows.parquet"
            source.write_bytes(data)
            try:
                counts, entries, row_log = _curate(source, Path(tmp), caplog)
            except InvalidArgument as exc:
                assert rows_in is None, exc.message  # only a damaged file may be refused
                assert "Parquet" in exc.message
                tally.refused_files += 1
                tally.handled += 1
                return
        _account(tally, counts, entries, row_log, counts.total if rows_in is None else rows_in)
        tally.handled += 1

    run()
    figures.record(
        "ingest parquet reader",
        "fuzz",
        injected=tally.inputs,
        survived=tally.handled,
        rows_in=tally.rows_in,
        rows_accounted=tally.rows_accounted,
        duplicates=tally.duplicates,
        outcome=tally.outcome(),
    )


# --- format detection ---------------------------------------------------------------------


def test_format_detection_on_random_bytes(
    figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    """Any bytes under any name: detected as some format, then read like it."""
    caplog.set_level(logging.DEBUG)
    tally = Tally()

    @settings(FUZZ, max_examples=150)
    @given(
        head=st.sampled_from([b"", b"PAR1", b"{", b"[", b" \n{", b"a,b\n", EMAIL.encode()]),
        body=st.binary(max_size=300),
        name=st.sampled_from(["", "x.jsonl", "x.csv", "x.parquet", "x.json", "x.txt"]),
    )
    def run(head: bytes, body: bytes, name: str) -> None:
        tally.inputs += 1
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "upload"
            source.write_bytes(head + body)
            fmt = detect_file_format(source, name)
            assert isinstance(fmt, FileFormat)
            try:
                counts, entries, row_log = _curate(source, Path(tmp), caplog, name)
            except InvalidArgument as exc:
                assert fmt is not FileFormat.JSONL, exc.message  # JSONL never refuses a file
                assert EMAIL not in exc.message
                tally.refused_files += 1
                tally.handled += 1
                return
        if fmt is FileFormat.JSONL:
            rows_in = sum(1 for x in (head + body).split(b"\n") if x.rstrip(b"\r\n").strip())
        else:
            rows_in = counts.total
        _account(tally, counts, entries, row_log, rows_in)
        tally.handled += 1

    run()
    figures.record(
        "ingest format detection",
        "fuzz",
        injected=tally.inputs,
        survived=tally.handled,
        rows_in=tally.rows_in,
        rows_accounted=tally.rows_accounted,
        duplicates=tally.duplicates,
        outcome=tally.outcome(),
    )
