"""Every record format parses to the canonical form; every file format streams; detection works."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewright.ingest.readers import FileFormat, detect_file_format, read_rows
from tunewright.ingest.records import (
    Kind,
    Reason,
    Record,
    RecordFormat,
    RowRejected,
    Turn,
    detect_format,
    parse_record,
)

CHAT = [
    {"role": "user", "content": "How do I reset it?"},
    {"role": "assistant", "content": "Open Settings."},
]
U, A = Turn("user", "How do I reset it?"), Turn("assistant", "Open Settings.")

# format -> (row, expected canonical record)
CASES: dict[RecordFormat, tuple[dict[str, Any], Record]] = {
    RecordFormat.MESSAGES: (
        {"messages": [{"role": "system", "content": "Be brief."}, *CHAT], "ticket_id": "T1"},
        Record(Kind.SFT, (Turn("system", "Be brief."), U, A), meta={"ticket_id": "T1"}),
    ),
    RecordFormat.PROMPT_COMPLETION: (
        {"prompt": "How do I reset it?", "completion": "Open Settings."},
        Record(Kind.SFT, (U, A)),
    ),
    RecordFormat.ALPACA: (
        {"instruction": "How do I reset it?", "input": "AcmeCRM", "output": "Open Settings."},
        Record(Kind.SFT, (Turn("user", "How do I reset it?\n\nAcmeCRM"), A)),
    ),
    RecordFormat.SHAREGPT: (
        {
            "conversations": [
                {"from": "human", "value": "How do I reset it?"},
                {"from": "gpt", "value": "Open Settings."},
            ]
        },
        Record(Kind.SFT, (U, A)),
    ),
    RecordFormat.PREFERENCE: (
        {"prompt": "How do I reset it?", "chosen": "Open Settings.", "rejected": "No idea."},
        Record(Kind.PREFERENCE, (U,), chosen=(A,), rejected=(Turn("assistant", "No idea."),)),
    ),
    RecordFormat.OPENAI_DPO: (
        {
            "input": {"messages": [{"role": "user", "content": "How do I reset it?"}]},
            "preferred_output": [{"role": "assistant", "content": "Open Settings."}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        },
        Record(Kind.PREFERENCE, (U,), chosen=(A,), rejected=(Turn("assistant", "No idea."),)),
    ),
    RecordFormat.HH_TRANSCRIPT: (
        {
            "chosen": "\n\nHuman: How do I reset it?\n\nAssistant: Open Settings.",
            "rejected": "\n\nHuman: How do I reset it?\n\nAssistant: No idea.",
        },
        Record(Kind.PREFERENCE, (U,), chosen=(A,), rejected=(Turn("assistant", "No idea."),)),
    ),
    RecordFormat.UNPAIRED: (
        {"prompt": "How do I reset it?", "completion": "Open Settings.", "label": True},
        Record(Kind.UNPAIRED, (U,), completion=(A,), label=True),
    ),
}


@pytest.mark.parametrize("fmt", list(RecordFormat))
def test_every_record_format_detects_and_parses(fmt: RecordFormat) -> None:
    row, expected = CASES[fmt]
    assert detect_format(row) is fmt
    record = parse_record(row, fmt)
    assert record == expected
    # the canonical JSON round-trips (it is what the JSONL export and the spool hold)
    assert Record.from_json(record.kind, record.to_json()) == record


@pytest.mark.parametrize(
    ("row", "fmt", "reason"),
    [
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            RecordFormat.MESSAGES,
            Reason.BAD_ROLE_ORDER,
        ),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            RecordFormat.MESSAGES,
            Reason.BAD_ROLE_ORDER,
        ),
        (
            {"messages": [{"role": "wizard", "content": "hi"}]},
            RecordFormat.MESSAGES,
            Reason.BAD_ROLE,
        ),
        ({"messages": "nope"}, RecordFormat.MESSAGES, Reason.BAD_TYPE),
        ({"messages": []}, RecordFormat.MESSAGES, Reason.EMPTY_FIELD),
        ({"prompt": "x", "completion": "  "}, RecordFormat.PROMPT_COMPLETION, Reason.EMPTY_FIELD),
        ({"prompt": "x"}, RecordFormat.PROMPT_COMPLETION, Reason.MISSING_FIELD),
        (
            {"prompt": "x", "completion": "y", "label": "maybe"},
            RecordFormat.UNPAIRED,
            Reason.BAD_LABEL,
        ),
        (
            {"chosen": "Human says hi", "rejected": "x"},
            RecordFormat.HH_TRANSCRIPT,
            Reason.BAD_ROLE_ORDER,
        ),
        ({"hello": "world"}, None, Reason.UNKNOWN_FORMAT),
    ],
)
def test_invalid_rows_name_their_reason(
    row: dict[str, Any], fmt: RecordFormat | None, reason: Reason
) -> None:
    with pytest.raises(RowRejected) as info:
        parse_record(row, fmt or detect_format(row))
    assert info.value.reason is reason
    # the detail never quotes the row's text
    assert "world" not in str(info.value)


def _rows() -> list[dict[str, Any]]:
    return [{"messages": CHAT, "category": "login"}, {"messages": CHAT, "category": "billing"}]


def test_jsonl_csv_and_parquet_stream_the_same_rows(tmp_path: Path) -> None:
    rows = _rows()
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # blank line ignored
    csv_path = tmp_path / "d.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["messages", "category"])
        for r in rows:
            writer.writerow([json.dumps(r["messages"]), r["category"]])
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)

    parsed = {}
    for path, fmt in (
        (jsonl, FileFormat.JSONL),
        (csv_path, FileFormat.CSV),
        (parquet, FileFormat.PARQUET),
    ):
        assert detect_file_format(path) is fmt
        renamed = path.with_suffix(".data")  # content sniffing when the name says nothing
        renamed.write_bytes(path.read_bytes())
        assert detect_file_format(renamed) is fmt
        raws = list(read_rows(path, fmt))
        assert all(r.error is None for r in raws)
        parsed[fmt] = [parse_record(r.data or {}, RecordFormat.MESSAGES) for r in raws]
    assert parsed[FileFormat.JSONL] == parsed[FileFormat.CSV] == parsed[FileFormat.PARQUET]
    assert [r.line for r in read_rows(jsonl, FileFormat.JSONL)] == [1, 2]


def test_reader_errors_are_rows_not_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"messages": []}\n{"a": \n[1, 2]\n{"x": "\xff"}\n')
    raws = list(read_rows(path, FileFormat.JSONL))
    assert [(r.line, r.error) for r in raws] == [
        (1, None),
        (2, Reason.INVALID_JSON),
        (3, Reason.NOT_AN_OBJECT),
        (4, Reason.INVALID_UTF8),
    ]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b'prompt,completion\n"a","b"\n"a","b","c"\n"\xff","b"\n')
    raws = list(read_rows(bad_csv, FileFormat.CSV))
    assert [(r.line, r.error) for r in raws] == [
        (2, None),
        (3, Reason.INVALID_CSV),
        (4, Reason.INVALID_UTF8),
    ]
