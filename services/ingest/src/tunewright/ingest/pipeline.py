"""The curation pipeline: one streaming pass from a raw file to a split, scrubbed dataset.

Per row, in order (each row ends in exactly one fate, and the counts add up)::

    read ─► parse + validate ─► over length? ─► terminology ─► exact dup? ─► filters
      │           │                  │                             │            │
   quarantined  quarantined      quarantined                  duplicate    filtered
    (reader)    (reason code)    (over_length)                 (of line)  (by filter)

    ─► PII scrub ─► exact dup after scrub? ─► near dup (MinHash)? ─► accepted ─► split
           │                 │                        │
      quarantined        duplicate                duplicate
   (pii_scrub_failed)    (of line)                (of line)

Rows are processed in batches (the PII step batches spaCy), so memory holds one batch, the
dedup indexes and one label per accepted row; accepted rows are spooled to disk, then split
and written as Parquet + JSONL. Dedup runs before the scrub where it can (cheap, and it saves
NER on duplicates) and again after it, on the text that will be published: rows that differ
only by personal data are duplicates once scrubbed.

This module has no transport imports; the worker calls :func:`curate` in a thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tunewright.core.artifacts import make_private, private_dir
from tunewright.core.errors import Cancelled, InvalidArgument
from tunewright.ingest import canary
from tunewright.ingest.dedup import ExactDeduper, NearDeduper
from tunewright.ingest.labels import find_noisy_labels
from tunewright.ingest.pii import DatasetScrubber, PiiConfig
from tunewright.ingest.quarantine import QuarantineWriter
from tunewright.ingest.readers import (
    DEFAULT_MAX_LINE_BYTES,
    FileFormat,
    RawRow,
    detect_file_format,
    read_rows,
)
from tunewright.ingest.records import (
    DEFAULT_MAX_CHARS,
    KIND_OF_FORMAT,
    Kind,
    Reason,
    Record,
    RecordFormat,
    RowRejected,
    detect_format,
    parse_record,
)
from tunewright.ingest.split import assign_eval
from tunewright.ingest.terminology import Glossary

#: ``check(texts, meta) -> reason | None``; see plugins/tunewright-curation/README.md
FilterFn = Callable[[Sequence[tuple[str, str]], Mapping[str, str]], "str | None"]
JSONL: Final = "application/jsonl"
PARQUET: Final = "application/vnd.apache.parquet"
_SPLITS: Final = ("train", "eval")


@dataclass(frozen=True)
class CurationConfig:
    file_format: FileFormat | None = None  # None: detect
    record_format: RecordFormat | None = None  # None: detect from the first decodable row
    kind: Kind | None = None  # None: whatever the format implies
    #: rows longer than this (characters of all texts) are quarantined over_length; > 0
    max_chars: int = DEFAULT_MAX_CHARS
    #: rows longer than this (bytes as read) are quarantined line_too_long (readers.py)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    exact_dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = 0.8
    #: (name, callable) in order
    filters: Sequence[tuple[str, FilterFn]] = ()
    terminology: Mapping[str, str] = field(default_factory=dict)
    pii: PiiConfig | None = field(default_factory=PiiConfig)
    quarantine_on_pii_failure: bool = True
    eval_fraction: float = 0.1
    seed: int = 0
    stratify_by: str = ""
    #: column whose value ``train`` / ``eval`` pins a row to that split; empty = none
    pin_by: str = ""
    #: label column to check with cleanlab; empty = off
    label_noise_field: str = ""
    #: "filter" (flagged rows are filtered by ``label_noise``) or "review" (kept, listed)
    label_noise_action: str = "filter"
    label_noise_folds: int = 5
    batch_size: int = 256
    source_name: str = ""
    #: PII canaries planted per entity type (0 = none; see :mod:`tunewright.ingest.canary`)
    canaries_per_type: int = canary.DEFAULT_PER_TYPE
    #: a canary recall under this for any type fails the job (the worker rejects it); 0 = off
    min_canary_recall: float = 0.0

    def __post_init__(self) -> None:
        if self.max_chars <= 0:  # there is no "unlimited": rows are held in memory
            raise ValueError(f"max_chars must be > 0, got {self.max_chars}")


@dataclass
class Counts:
    total: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    filtered: int = 0
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    filtered_by_filter: Counter[str] = field(default_factory=Counter)
    filtered_by_reason: Counter[str] = field(default_factory=Counter)
    duplicates_by_kind: Counter[str] = field(default_factory=Counter)
    pii_entities: Counter[str] = field(default_factory=Counter)
    train: int = 0
    eval: int = 0

    @property
    def in_flight(self) -> int:
        """Rows read but not settled yet (0 once the pass is over)."""
        return self.total - self.accepted - self.quarantined - self.duplicates - self.filtered

    def balanced(self) -> bool:
        return self.in_flight == 0 and self.train + self.eval == self.accepted

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_rows": self.total,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "filtered": self.filtered,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "filtered_by_filter": dict(sorted(self.filtered_by_filter.items())),
            "filtered_by_reason": dict(sorted(self.filtered_by_reason.items())),
            "duplicates_by_kind": dict(sorted(self.duplicates_by_kind.items())),
            "pii_entities": dict(sorted(self.pii_entities.items())),
            "train_rows": self.train,
            "eval_rows": self.eval,
        }


@dataclass
class CurationResult:
    kind: Kind
    record_format: RecordFormat
    file_format: FileFormat
    counts: Counts
    #: sha256 over the published rows (train then eval JSONL)
    content_hash: str
    #: "train.parquet", "eval.parquet", "train.jsonl", "eval.jsonl", "report.json",
    #: "pii_audit.json", "row_log.jsonl" -> file
    files: dict[str, Path]
    report: dict[str, Any]
    pii_audit: dict[str, Any]
    #: PII canary recall per entity type; None when nothing was scrubbed or planted
    canaries: canary.CanaryReport | None = None


ProgressFn = Callable[[Counts, str], None]


class _RowLog:
    """Fate of every row that was not accepted: line, fate, reason / filter / duplicate of."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = path.open("w", encoding="utf-8")

    def write(self, line: int, fate: str, **info: Any) -> None:
        self._f.write(json.dumps({"line": line, "fate": fate, **info}) + "\n")

    def close(self) -> None:
        self._f.close()

    def reopen(self) -> None:
        """Append after the pass (rows filtered by a whole-dataset step)."""
        if self._f.closed:
            self._f = self.path.open("a", encoding="utf-8")


class _Pass:
    """State of one curation pass (see :func:`curate`)."""

    def __init__(
        self,
        config: CurationConfig,
        *,
        scrubber: DatasetScrubber | None,
        quarantine: QuarantineWriter,
        row_log: _RowLog,
        spool: Path,
    ) -> None:
        self.config = config
        self.counts = Counts()
        self.scrubber = scrubber
        self.quarantine = quarantine
        self.row_log = row_log
        self.glossary = Glossary(config.terminology)
        self.exact = ExactDeduper() if config.exact_dedup else None
        self.exact_scrubbed = ExactDeduper() if config.exact_dedup else None
        self.near = NearDeduper(config.near_threshold) if config.near_dedup else None
        self.fmt = config.record_format
        self.kind: Kind | None = None
        self.labels: list[str | None] = []
        self.pins: list[str | None] = []  # SplitSpec.pin_by values, in step with labels
        #: input line of each accepted (spooled) row
        self.lines: list[int] = []
        self.meta_keys: dict[str, None] = {}
        self.spool_path = spool
        self._spool = spool.open("w", encoding="utf-8")
        self._batch: list[tuple[int, bytes, Record]] = []

    # --- fates ---
    def quarantined(self, line: int, reason: Reason, detail: str, raw: bytes) -> None:
        self.counts.quarantined += 1
        self.counts.quarantined_by_reason[reason.value] += 1
        self.quarantine.write(line, reason.value, detail, raw)
        self.row_log.write(line, "quarantined", reason=reason.value)

    def duplicate(self, line: int, of_line: int, how: str) -> None:
        self.counts.duplicates += 1
        self.counts.duplicates_by_kind[how] += 1
        self.row_log.write(line, "duplicate", of_line=of_line, match=how)

    def filtered(self, line: int, name: str, reason: str) -> None:
        self.counts.filtered += 1
        self.counts.filtered_by_filter[name] += 1
        self.counts.filtered_by_reason[f"{name}:{reason}"] += 1
        self.row_log.write(line, "filtered", filter=name, reason=reason)

    # --- per row ---
    def _parse(self, row: dict[str, Any]) -> Record:
        if self.fmt is None:
            self.fmt = detect_format(row)  # the first decodable row decides; raises if unknown
        try:
            record = parse_record(row, self.fmt)
        except RowRejected as exc:
            if exc.reason in (Reason.MISSING_FIELD, Reason.BAD_TYPE):
                try:
                    other = detect_format(row)
                except RowRejected:
                    raise exc from None
                if other is not self.fmt:
                    raise RowRejected(
                        Reason.FORMAT_MISMATCH, f"row is {other.value}, dataset is {self.fmt.value}"
                    ) from None
            raise
        if self.kind is None:
            self.kind = record.kind
            if self.config.kind is not None and self.config.kind is not record.kind:
                raise InvalidArgument(
                    f"records are {self.fmt.value} ({record.kind.value}), but the spec asks for "
                    f"a {self.config.kind.value} dataset",
                    reason="DATASET_KIND_MISMATCH",
                )
        return record

    def add(self, raw: RawRow) -> None:
        self.counts.total += 1
        if raw.error is not None or raw.data is None:
            self.quarantined(raw.line, raw.error or Reason.NOT_AN_OBJECT, raw.detail, raw.raw)
            return
        try:
            record = self._parse(raw.data)
        except RowRejected as exc:
            self.quarantined(raw.line, exc.reason, exc.detail, raw.raw)
            return
        text = record.all_text()
        if len(text) > self.config.max_chars:
            self.quarantined(
                raw.line, Reason.OVER_LENGTH, f"{len(text)} > {self.config.max_chars}", raw.raw
            )
            return
        if self.glossary.canonical:
            record = record.with_texts([self.glossary.apply(t) for _, t in record.texts()])
            text = record.all_text()
        if self.exact is not None:
            of_line = self.exact.check(text, raw.line)
            if of_line is not None:
                self.duplicate(raw.line, of_line, "exact")
                return
        texts = list(record.texts())
        for name, check in self.config.filters:
            reason = check(texts, record.meta)
            if reason:
                self.filtered(raw.line, name, reason)
                return
        self._batch.append((raw.line, raw.raw, record))
        if len(self._batch) >= self.config.batch_size:
            self.flush()

    # --- per batch ---
    def flush(self) -> None:
        batch, self._batch = self._batch, []
        scrubbed = self._scrub(batch)
        for (line, _raw, _record), record in zip(batch, scrubbed, strict=True):
            if record is None:
                continue  # quarantined by the scrub step
            text = record.all_text()
            if self.exact_scrubbed is not None:
                of_line = self.exact_scrubbed.check(text, line)
                if of_line is not None:
                    self.duplicate(line, of_line, "exact_after_scrub")
                    continue
            if self.near is not None:
                of_line = self.near.check(text, line)
                if of_line is not None:
                    self.duplicate(line, of_line, "near")
                    continue
            self.accept(line, record)

    def _scrub(self, batch: list[tuple[int, bytes, Record]]) -> list[Record | None]:
        """Scrubbed records in batch order; None for a row whose scrub failed (quarantined)."""
        if self.scrubber is None:
            return [record for _, _, record in batch]
        safe = self.scrubber.config.safe_meta_columns
        # meta columns (a CSV's requester_email, ...) are scrubbed like the text, after it
        metas = [[k for k in r.meta if k not in safe] for _, _, r in batch]
        items = [
            (
                [n for n, _ in r.texts()] + [f"meta.{k}" for k in keys],
                [t for _, t in r.texts()] + [r.meta[k] for k in keys],
            )
            for (_, _, r), keys in zip(batch, metas, strict=True)
        ]
        try:
            results: list[list[str] | None] = list(self.scrubber.scrub_many(items))
        except Exception:
            if not self.config.quarantine_on_pii_failure:
                raise
            # find the rows that fail, one at a time; the others are still scrubbed
            results = []
            for (line, raw, _record), (fields, texts) in zip(batch, items, strict=True):
                try:
                    results.append(self.scrubber.scrub(fields, texts))
                except Exception as exc:
                    self.quarantined(line, Reason.PII_SCRUB_FAILED, type(exc).__name__, raw)
                    results.append(None)
        return [
            None if texts is None else _with_scrubbed(record, keys, texts)
            for (_, _, record), keys, texts in zip(batch, metas, results, strict=True)
        ]

    def accept(self, line: int, record: Record) -> None:
        self.counts.accepted += 1
        label = record.meta.get(self.config.stratify_by) if self.config.stratify_by else None
        self.labels.append(label)
        self.pins.append(record.meta.get(self.config.pin_by) if self.config.pin_by else None)
        self.lines.append(line)
        for key in record.meta:
            self.meta_keys.setdefault(key, None)
        self._spool.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")

    def close_spool(self) -> None:
        self._spool.close()


def _with_scrubbed(record: Record, meta_keys: Sequence[str], texts: Sequence[str]) -> Record:
    """``record`` with its scrubbed texts, then its scrubbed meta values (``meta_keys`` order)."""
    n = len(texts) - len(meta_keys)
    meta = {**record.meta, **dict(zip(meta_keys, texts[n:], strict=True))}
    return dataclasses.replace(record.with_texts(texts[:n]), meta=meta)


def _parquet_schema(kind: Kind, meta_keys: Sequence[str]) -> Any:
    import pyarrow as pa

    turns = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if kind is Kind.SFT:
        fields = [("messages", turns)]
    elif kind is Kind.PREFERENCE:
        fields = [("prompt", turns), ("chosen", turns), ("rejected", turns)]
    else:
        fields = [("prompt", turns), ("completion", turns), ("label", pa.bool_())]
    core = {name for name, _ in fields}
    fields += [(key, pa.string()) for key in meta_keys if key not in core]
    return pa.schema(fields)


def _label_noise(state: _Pass) -> tuple[set[int], dict[str, Any]]:
    """Spool indices of rows whose label looks wrong (cleanlab), and the report section."""
    field_name = state.config.label_noise_field
    indices, texts, labels = [], [], []
    with state.spool_path.open(encoding="utf-8") as spool:
        for index, line in enumerate(spool):
            row = json.loads(line)
            label = row.get(field_name)
            if not isinstance(label, str) or not label:
                continue
            prompt = row.get("messages") if "messages" in row else row.get("prompt", [])
            indices.append(index)
            texts.append(" ".join(t["content"] for t in prompt if t["role"] == "user"))
            labels.append(label)
    result = find_noisy_labels(
        texts, labels, folds=state.config.label_noise_folds, seed=state.config.seed
    )
    flagged = {indices[i] for i in result.flagged}
    section = {
        **result.summary(),
        "label_field": field_name,
        "action": state.config.label_noise_action,
        "flagged_lines": sorted(state.lines[i] for i in flagged),
    }
    return flagged, section


def _write_outputs(
    state: _Pass, out_dir: Path, eval_rows: set[int], kind: Kind, dropped: set[int]
) -> tuple[dict[str, Path], str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(kind, list(state.meta_keys))
    files = {f"{s}.{ext}": out_dir / f"{s}.{ext}" for s in _SPLITS for ext in ("jsonl", "parquet")}
    jsonl = {s: files[f"{s}.jsonl"].open("w", encoding="utf-8") for s in _SPLITS}
    parquet = {s: pq.ParquetWriter(files[f"{s}.parquet"], schema) for s in _SPLITS}
    pending: dict[str, list[dict[str, Any]]] = {s: [] for s in _SPLITS}

    def flush(split: str) -> None:
        if pending[split]:
            parquet[split].write_table(pa.Table.from_pylist(pending[split], schema=schema))
            pending[split] = []

    try:
        with state.spool_path.open(encoding="utf-8") as spool:
            for index, line in enumerate(spool):
                if index in dropped:
                    continue
                split = "eval" if index in eval_rows else "train"
                jsonl[split].write(line)
                pending[split].append(json.loads(line))
                if len(pending[split]) >= 2048:
                    flush(split)
        for split in _SPLITS:
            flush(split)
    finally:
        for f in jsonl.values():
            f.close()
        for w in parquet.values():
            w.close()
    digest = hashlib.sha256()
    for split in _SPLITS:
        digest.update(f"{split}\n".encode())
        with files[f"{split}.jsonl"].open("rb") as published:
            for chunk in iter(lambda: published.read(1 << 20), b""):
                digest.update(chunk)
    return files, digest.hexdigest()


def curate(
    source: Path,
    config: CurationConfig,
    *,
    work_dir: Path,
    quarantine: QuarantineWriter,
    scrubber: DatasetScrubber | None,
    progress: ProgressFn | None = None,
    progress_every: int = 5000,
    cancelled: Callable[[], bool] = lambda: False,
) -> CurationResult:
    """Run the whole pipeline on ``source``; outputs are written under ``work_dir``.

    :raises InvalidArgument: the file cannot be read at all, or its records contradict the
        spec (e.g. the wrong dataset kind); row-level problems never raise, they quarantine.
    :raises Cancelled: ``cancelled()`` turned true between batches.
    """
    started = time.monotonic()
    private_dir(work_dir)  # accepted rows, splits, row log: owner-only (0700, files 0600)
    file_format = config.file_format or detect_file_format(source, config.source_name)
    row_log = _RowLog(work_dir / "row_log.jsonl")
    state = _Pass(
        config,
        scrubber=scrubber,
        quarantine=quarantine,
        row_log=row_log,
        spool=work_dir / "accepted.spool.jsonl",
    )
    try:
        next_progress = progress_every
        for raw in read_rows(source, file_format, max_line_bytes=config.max_line_bytes):
            state.add(raw)
            if state.counts.total >= next_progress:
                next_progress += progress_every
                if cancelled():
                    raise Cancelled("ingest job cancelled")
                if progress:
                    progress(state.counts, "curating")
        state.flush()
    finally:
        state.close_spool()
        row_log.close()
        quarantine.close()
    counts = state.counts
    fmt = state.fmt or config.record_format or RecordFormat.MESSAGES
    kind = state.kind or config.kind or KIND_OF_FORMAT[fmt]
    dropped: set[int] = set()
    label_report: dict[str, Any] | None = None
    row_log.reopen()
    if config.label_noise_field and counts.accepted:
        if progress:
            progress(counts, "checking labels")
        flagged, label_report = _label_noise(state)
        if config.label_noise_action == "filter":
            dropped = flagged
            for index in sorted(flagged):
                state.filtered(state.lines[index], "label_noise", "noisy_label")
            counts.accepted -= len(flagged)
    kept = [i for i in range(len(state.labels)) if i not in dropped]
    chosen = assign_eval(
        [state.labels[i] for i in kept],
        eval_fraction=config.eval_fraction,
        seed=config.seed,
        pins=[state.pins[i] for i in kept],
    )
    eval_rows = {kept[i] for i in chosen}
    counts.eval = len(eval_rows)
    counts.train = counts.accepted - counts.eval
    if progress:
        progress(counts, "writing")
    row_log.close()
    files, content_hash = _write_outputs(state, work_dir, eval_rows, kind, dropped)
    if progress and scrubber is not None:
        progress(counts, "planting PII canaries")
    canaries = _canaries(state, scrubber, dropped, content_hash)
    state.spool_path.unlink()
    audit: dict[str, Any] = scrubber.audit_report() if scrubber else {"enabled": False}
    if canaries is not None:
        audit["canaries"] = canaries.to_dict()
    if scrubber is not None:
        for (entity, _field), n in scrubber.audit.items():
            counts.pii_entities[entity] += n
    assert counts.balanced(), counts.to_dict()
    report = {
        "source": {"file_format": file_format.value, "record_format": fmt.value},
        "kind": kind.value,
        "counts": counts.to_dict(),
        "counts_add_up": counts.balanced(),
        "content_hash": content_hash,
        "dedup": {
            "exact": config.exact_dedup,
            "near": state.near.cluster_report() if state.near else None,
        },
        "filters": [name for name, _ in config.filters],
        "terminology": {
            "terms": len(state.glossary.canonical),
            "replacements": dict(sorted(state.glossary.replacements.items())),
        },
        "label_noise": label_report,
        "pii_canaries": canaries.to_dict() if canaries is not None else None,
        "split": {
            "eval_fraction": config.eval_fraction,
            "seed": config.seed,
            "stratify_by": config.stratify_by or None,
            "pin_by": config.pin_by or None,
            "eval_by_label": _by_label(state.labels, eval_rows),
        },
        "duration_seconds": round(time.monotonic() - started, 3),
    }
    files["report.json"] = work_dir / "report.json"
    files["report.json"].write_text(json.dumps(report, indent=2, sort_keys=True))
    files["pii_audit.json"] = work_dir / "pii_audit.json"
    files["pii_audit.json"].write_text(json.dumps(audit, indent=2, sort_keys=True))
    files["row_log.jsonl"] = row_log.path
    make_private(work_dir)  # what pyarrow and open() made under the process umask
    return CurationResult(
        kind, fmt, file_format, counts, content_hash, files, report, audit, canaries
    )


def _canaries(
    state: _Pass, scrubber: DatasetScrubber | None, dropped: set[int], content_hash: str
) -> canary.CanaryReport | None:
    """Canary recall of the job's engine and policy, planted in shadow copies of the texts of
    a seeded sample of accepted rows (the spool: already scrubbed); see :mod:`.canary`."""
    config = state.config
    if scrubber is None or config.canaries_per_type <= 0 or not state.counts.accepted:
        return None
    digest = hashlib.sha256(f"canaries\n{config.seed}\n{content_hash}".encode()).digest()
    seed = int.from_bytes(digest[:8], "big")
    kept = [i for i in range(len(state.lines)) if i not in dropped]
    sample = set(random.Random(seed).sample(kept, min(canary.CARRIER_ROWS, len(kept))))
    carriers: list[str] = []
    kind = state.kind
    assert kind is not None  # set by the first accepted row
    with state.spool_path.open(encoding="utf-8") as spool:
        for index, line in enumerate(spool):
            if index in sample:
                record = Record.from_json(kind, json.loads(line))
                carriers += [text for _, text in record.texts()]
    return canary.run_canaries(
        carriers,
        scrubber.engine,
        scrubber.config,
        seed=seed,
        per_type=config.canaries_per_type,
        min_recall=config.min_canary_recall,
    )


def _by_label(labels: Sequence[str | None], eval_rows: set[int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for index, label in enumerate(labels):
        entry = out.setdefault(label or "", {"train": 0, "eval": 0})
        entry["eval" if index in eval_rows else "train"] += 1
    return dict(sorted(out.items()))
