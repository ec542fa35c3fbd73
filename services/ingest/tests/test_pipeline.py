"""The curation pipeline on real presidio + spaCy: fates, reason codes, PII recall, dedup, split."""

from __future__ import annotations

import json
import stat
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tunewright.core.plugins import Registries
from tunewright.ingest.pii import DatasetScrubber, PiiConfig, PiiEngine
from tunewright.ingest.pipeline import CurationConfig, CurationResult, curate
from tunewright.ingest.quarantine import QuarantineWriter, purge_expired
from tunewright.ingest.readers import FileFormat
from tunewright.ingest.records import Reason

from .conftest import GLOSSARY

CHAT = [{"role": "user", "content": "How do I export my contacts to a CSV file?"},
        {"role": "assistant", "content": "Open Exports, pick CSV and press Start."}]  # fmt: skip


class FailingScrubber(DatasetScrubber):
    """Fault injection: scrubbing fails for texts that carry a marker."""

    def scrub_many(self, records: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[str]]:
        if any("EXPLODE" in t for _, texts in records for t in texts):
            raise RuntimeError("recognizer crashed")
        return super().scrub_many(records)


def _run(
    tmp_path: Path,
    source: Path,
    config: CurationConfig,
    scrubber: DatasetScrubber | None,
) -> CurationResult:
    return curate(
        source,
        config,
        work_dir=tmp_path / "out",
        quarantine=QuarantineWriter(tmp_path / "quarantine" / "job-1"),
        scrubber=scrubber,
    )


def _filters(registries: Registries, names: Sequence[str]) -> list[tuple[str, Any]]:
    return [(n, registries.curation_filters.get(n).factory()) for n in names]


def test_every_reason_code_quarantines_the_row_with_its_line(
    tmp_path: Path, pii_engine: PiiEngine, pii_config: PiiConfig
) -> None:
    def chat(user: str, answer: str = "Open Exports, pick CSV and press Start.") -> bytes:
        return json.dumps({"messages": [{"role": "user", "content": user},
                                        {"role": "assistant", "content": answer}]}).encode()  # fmt: skip

    lines: dict[Reason | None, bytes] = {
        # only while the dataset's format is still unknown; later such a row is missing_field
        Reason.UNKNOWN_FORMAT: json.dumps({"hello": "world"}).encode(),
        None: chat("How do I export my contacts to a CSV file?"),
        Reason.INVALID_UTF8: b'{"messages": "\xff"}',
        Reason.INVALID_JSON: b'{"messages": [',
        Reason.NOT_AN_OBJECT: b"[1, 2, 3]",
        Reason.FORMAT_MISMATCH: json.dumps({"prompt": "a", "completion": "b"}).encode(),
        Reason.MISSING_FIELD: json.dumps({"messages": None}).encode(),
        Reason.EMPTY_FIELD: chat(""),
        Reason.BAD_TYPE: json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
        Reason.BAD_ROLE: json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(),
        Reason.BAD_ROLE_ORDER: json.dumps({"messages": CHAT[::-1]}).encode(),
        Reason.OVER_LENGTH: chat("How do I export? " + "Please tell me more. " * 40),
        Reason.PII_SCRUB_FAILED: chat("EXPLODE when exporting contacts to CSV, what now?"),
    }
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b"\n".join(lines.values()) + b"\n")
    config = CurationConfig(
        max_chars=400, record_format=None, pii=pii_config, near_dedup=False, eval_fraction=0.0
    )
    result = _run(tmp_path, source, config, FailingScrubber(pii_engine, pii_config))

    expected = {r.value for r in lines if r is not None} - {Reason.INVALID_CSV.value}
    counts = result.counts
    assert set(counts.quarantined_by_reason) == expected
    assert counts.accepted == 1 and counts.quarantined == len(lines) - 1
    assert (
        counts.total == counts.accepted + counts.quarantined + counts.duplicates + counts.filtered
    )

    folder = tmp_path / "quarantine" / "job-1"
    entries = [json.loads(x) for x in (folder / "quarantine.jsonl").read_text().splitlines()]
    line_of = {reason: n for n, reason in enumerate(lines, start=1)}
    assert {e["reason"]: e["line"] for e in entries} == {
        r.value: line_of[r] for r in lines if r is not None
    }
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "quarantine.jsonl").stat().st_mode) == 0o600
    # the curated splits, row log and reports: owner-only too (pyarrow writes under the umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert {n: stat.S_IMODE(f.stat().st_mode) for n, f in result.files.items()} == {
        n: 0o600 for n in result.files
    }
    # raw rows live only in the quarantine: the row log has lines and codes, no text
    row_log = result.files["row_log.jsonl"].read_text()
    assert "EXPLODE" not in row_log and "world" not in row_log
    assert "EXPLODE" in (folder / "quarantine.jsonl").read_text()
    assert any("raw_b64" in e for e in entries)  # invalid UTF-8 kept byte-exact


def test_csv_reason_code_and_retention(tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text('prompt,completion\n"How to export?","Use Exports."\n"a","b","c"\n')
    config = CurationConfig(pii=None, near_dedup=False, eval_fraction=0.0)
    result = _run(tmp_path, source, config, None)
    assert result.file_format is FileFormat.CSV
    assert dict(result.counts.quarantined_by_reason) == {"invalid_csv": 1}
    assert result.counts.accepted == 1

    assert purge_expired(tmp_path / "quarantine", 30) == 0
    assert purge_expired(tmp_path / "quarantine", 30, now=4e9) == 1  # far future: expired
    assert not (tmp_path / "quarantine" / "job-1").exists()


def _truth(source: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in source.with_suffix(".truth.jsonl").read_text().splitlines()]


def _outputs(result: CurationResult) -> dict[str, list[dict[str, Any]]]:
    return {
        split: [json.loads(x) for x in result.files[f"{split}.jsonl"].read_text().splitlines()]
        for split in ("train", "eval")
    }


@pytest.fixture(scope="module")
def curated_1k(
    tickets_1k: Path,
    registries: Registries,
    pii_engine: PiiEngine,
    pii_config: PiiConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> CurationResult:
    config = CurationConfig(
        filters=_filters(registries, ["length", "language", "repetition", "junk"]),
        terminology=yaml.safe_load(GLOSSARY.read_text()),
        pii=pii_config,
        stratify_by="category",
        eval_fraction=0.2,
        seed=3,
    )
    work = tmp_path_factory.mktemp("curated")
    return _run(work, tickets_1k, config, DatasetScrubber(pii_engine, pii_config))


def test_generated_tickets_every_row_has_one_fate(
    curated_1k: CurationResult, tickets_1k: Path
) -> None:
    counts = curated_1k.counts
    assert counts.total == 1000
    assert counts.accepted + counts.quarantined + counts.duplicates + counts.filtered == 1000
    assert counts.train + counts.eval == counts.accepted
    assert curated_1k.report["counts_add_up"] is True

    fates = {}
    for entry in map(json.loads, curated_1k.files["row_log.jsonl"].read_text().splitlines()):
        fates[entry["line"]] = entry
    assert len(fates) == counts.total - counts.accepted  # one entry per non-accepted row
    truth = _truth(tickets_1k)
    for t in truth:
        fate = fates.get(t["line"])
        if t["kind"] == "junk" and t["junk"] in ("truncated_json", "invalid_utf8", "empty"):
            assert fate and fate["fate"] == "quarantined", t
        if t["kind"] == "junk" and t["junk"] in ("slang", "foreign"):
            assert fate and fate["fate"] in ("filtered", "duplicate"), t
        if t["kind"] == "exact_duplicate":
            assert fate and fate["fate"] == "duplicate", t
            assert fate["of_line"] == t["duplicate_of_line"] or fates.get(t["duplicate_of_line"])
    near = [t for t in truth if t["kind"] == "near_duplicate"]
    caught = [t for t in near if fates.get(t["line"], {}).get("fate") == "duplicate"]
    assert len(caught) / len(near) >= 0.9, (len(caught), len(near))


def test_pii_recall_by_entity_type_on_the_ground_truth(
    curated_1k: CurationResult, tickets_1k: Path
) -> None:
    truth = {t["line"]: t for t in _truth(tickets_1k)}
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for row in (r for rows in _outputs(curated_1k).values() for r in rows):
        planted = truth[int(row["ticket_id"][1:])]["pii"]
        text = {"user": row["messages"][0]["content"], "assistant": row["messages"][1]["content"]}
        for item in planted:
            total[item["type"]] += 1
            found[item["type"]] += item["value"] not in text[item["turn"]]
    recall = {kind: found[kind] / total[kind] for kind in total}
    assert set(recall) == {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD",
                           "STREET_ADDRESS", "IP_ADDRESS", "ACCOUNT_ID"}  # fmt: skip
    assert recall["PERSON"] >= 0.95, recall
    assert all(value >= 0.98 for kind, value in recall.items() if kind != "PERSON"), recall
    # the audit counts types and fields, never values
    audit = json.dumps(curated_1k.pii_audit)
    assert curated_1k.pii_audit["spans_by_entity"]["EMAIL_ADDRESS"] >= total["EMAIL_ADDRESS"] * 0.5
    report = curated_1k.files["report.json"].read_text()
    row_log = curated_1k.files["row_log.jsonl"].read_text()
    for value in {item["value"] for t in truth.values() for item in t["pii"]}:
        assert value not in audit and value not in report and value not in row_log


def test_glossary_standardises_product_names(curated_1k: CurationResult) -> None:
    variants = [v for v in yaml.safe_load(GLOSSARY.read_text()) if v.lower() not in ("acmecrm",)]
    text = "\n".join(json.dumps(r) for rows in _outputs(curated_1k).values() for r in rows)
    for variant in variants:
        assert f" {variant} " not in text and f" {variant}." not in text, variant
    assert curated_1k.report["terminology"]["replacements"]


def _shingles(row: dict[str, Any]) -> set[str]:
    words = " ".join(m["content"] for m in row["messages"]).lower().split()
    return {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}


def test_split_is_stratified_and_no_near_duplicate_straddles_it(curated_1k: CurationResult) -> None:
    out = _outputs(curated_1k)
    assert (
        len(out["train"]) == curated_1k.counts.train and len(out["eval"]) == curated_1k.counts.eval
    )
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for split, rows in out.items():
        for row in rows:
            by_label[row["category"]][split] += 1
    for label, c in by_label.items():
        share = c["eval"] / (c["train"] + c["eval"])
        assert abs(share - 0.2) < 0.03, (label, c)
    # independent check with exact Jaccard over word 3-grams, every train x eval pair
    train = [_shingles(r) for r in out["train"]]
    for e in map(_shingles, out["eval"]):
        for t in train:
            assert len(e & t) / len(e | t) < 0.8

    # Parquet holds the same rows as the JSONL export
    table = pq.read_table(curated_1k.files["train.parquet"]).to_pylist()
    assert [r["messages"] for r in table] == [r["messages"] for r in out["train"]]


def test_same_input_same_seed_same_dataset(
    ticketgen: Any, tmp_path: Path, pii_engine: PiiEngine, pii_config: PiiConfig
) -> None:
    source = ticketgen.write_tickets(tmp_path / "src", 200, seed=11)
    hashes = []
    for run in ("a", "b"):
        config = CurationConfig(pii=pii_config, stratify_by="category", seed=5)
        result = _run(tmp_path / run, source, config, DatasetScrubber(pii_engine, pii_config))
        hashes.append(result.content_hash)
    assert hashes[0] == hashes[1]
    other = _run(
        tmp_path / "c",
        source,
        CurationConfig(pii=pii_config, seed=6),
        DatasetScrubber(pii_engine, pii_config),
    )
    assert other.content_hash != hashes[0]


def test_pseudonyms_are_consistent_within_a_dataset(
    pii_engine: PiiEngine, pii_config: PiiConfig
) -> None:
    config = PiiConfig(
        entities=pii_config.entities, operators={"PERSON": "pseudonym", "EMAIL_ADDRESS": "hash"},
        allow_list=pii_config.allow_list, hash_key=b"k" * 32, scope="ws/ds",
    )  # fmt: skip
    scrubber = DatasetScrubber(pii_engine, config)
    user, answer = scrubber.scrub(
        ["messages.user", "messages.assistant"],
        ["Hi, this is Maria Lopez, write to maria.lopez@example.com please.",
         "Hi Maria, thanks for reaching out.\nBest regards, Tom Weber, Acme Support"],
    )  # fmt: skip
    assert "Maria" not in user + answer and "maria.lopez@example.com" not in user
    fake_first = user.split("this is ")[1].split()[0]
    assert answer.startswith(f"Hi {fake_first},")  # same person -> same fake first name
    assert "<EMAIL_ADDRESS:" in user
    again = DatasetScrubber(pii_engine, config).scrub(
        ["messages.user"], [user.replace(fake_first, "Maria")]
    )
    assert fake_first in again[0]


@pytest.mark.parametrize("action", ["filter", "review"])
def test_noisy_labels_are_found_with_cleanlab(
    tickets_1k: Path, tmp_path: Path, action: str
) -> None:
    config = CurationConfig(
        pii=None, label_noise_field="category", label_noise_action=action, stratify_by="category"
    )
    result = _run(tmp_path, tickets_1k, config, None)
    section = result.report["label_noise"]
    flagged = set(section["flagged_lines"])
    mislabeled = {t["line"] for t in _truth(tickets_1k) if t["kind"] == "mislabeled"}
    published = {r["ticket_id"] for rows in _outputs(result).values() for r in rows}
    candidates = {line for line in mislabeled if f"T{line:07d}" in published or line in flagged}
    assert len(flagged & candidates) / len(flagged) >= 0.8  # precision
    assert len(flagged & candidates) / len(candidates) >= 0.7  # recall
    c = result.counts
    assert c.accepted + c.quarantined + c.duplicates + c.filtered == c.total
    assert c.train + c.eval == c.accepted
    if action == "filter":
        assert c.filtered_by_filter["label_noise"] == len(flagged)
        assert not any(f"T{line:07d}" in published for line in flagged)
    else:
        assert "label_noise" not in c.filtered_by_filter
        assert all(f"T{line:07d}" in published for line in flagged)
