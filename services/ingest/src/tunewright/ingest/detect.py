"""PII detection outside a job, with the ingest service's engine and defaults.

``tunewright pii detect`` reads JSONL ``{"id", "text"}`` and writes ``{"id", "spans":
[[start, end, type], ...]}`` (character offsets into ``text``), so any scorer can measure the
scrubber the service runs: the same settings (``TW_INGEST__*``, ``--config``), the same
installed recognizer plugins, the same segmenting, caching and name propagation. Each input
row is one record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.plugins import Registries
from tunewright.ingest import convert
from tunewright.ingest.pii import DatasetScrubber, Span, load_engine
from tunewright.ingest.settings import IngestSettings
from tunewright.ingest.terminology import load_glossary
from tunewright.ingest.v1 import ingest_pb2

BATCH: int = 64


def service_scrubber(settings: IngestSettings, registries: Registries) -> DatasetScrubber:
    """A scrubber configured exactly as an ingest job with a default PII policy would be."""
    section = settings.ingest
    glossary = load_glossary(section.glossary_file) if section.glossary_file else {}
    bad: list[FieldViolation] = []
    spec = ingest_pb2.IngestSpec(workspace=settings.workspace, dataset="pii-detect")
    config = convert.pii_config(spec, section, registries, allow=set(glossary.values()), bad=bad)
    if config is None:
        raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in bad))
    recognizers = {spec.name: spec.factory for spec in registries.pii_recognizers}
    return DatasetScrubber(load_engine(config.nlp_model, recognizers), config)


def detect_lines(lines: Iterable[str], scrubber: DatasetScrubber) -> Iterator[dict[str, Any]]:
    """One output object per non-blank input line, in order; bad lines raise with their number."""
    batch: list[tuple[Any, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InvalidArgument(f'line {number}: expected an object with a string "text"')
        batch.append((row.get("id", number), row["text"]))
        if len(batch) >= BATCH:
            yield from _flush(batch, scrubber)
            batch = []
    if batch:
        yield from _flush(batch, scrubber)


def _flush(batch: list[tuple[Any, str]], scrubber: DatasetScrubber) -> Iterator[dict[str, Any]]:
    found = scrubber.find_records([[text] for _, text in batch])
    for (row_id, _), (spans,) in zip(batch, found, strict=True):
        yield {"id": row_id, "spans": [list(s) for s in merged(spans)]}


def merged(spans: Iterable[Span]) -> list[tuple[int, int, str]]:
    """Non-overlapping spans covering what the scrub removes: overlapping spans join into one
    (the anonymizer trims, never drops, the weaker of two intersecting results), typed by the
    longest of them (then the highest score)."""
    out: list[tuple[int, int, str]] = []
    best: Span | None = None
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if out and span.start < out[-1][1]:
            start, end, _ = out[-1]
            assert best is not None
            if (span.end - span.start, span.score) > (best.end - best.start, best.score):
                best = span
            out[-1] = (start, max(end, span.end), best.entity)
        else:
            best = span
            out.append((span.start, span.end, span.entity))
    return out


def run(stdin: TextIO, stdout: TextIO, settings: IngestSettings, registries: Registries) -> int:
    scrubber = service_scrubber(settings, registries)
    count = 0
    for out in detect_lines(stdin, scrubber):
        stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        count += 1
    stdout.flush()
    return count
