"""PII leak paths and server policy, on real presidio + spaCy: meta columns, keyed hashes,
'keep' and allow-list additions, segments that keep entities whole, names found once marked
everywhere in a record, and ``tunewright pii detect``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tunewright.core.errors import FieldViolation
from tunewright.core.plugins import Registries
from tunewright.ingest import convert
from tunewright.ingest.hashkey import KEY_FILE, hash_key
from tunewright.ingest.pii import DatasetScrubber, PiiConfig, PiiConfigError, PiiEngine, segments
from tunewright.ingest.pipeline import CurationConfig, curate
from tunewright.ingest.quarantine import QuarantineWriter
from tunewright.ingest.readers import FileFormat
from tunewright.ingest.settings import IngestSection, IngestSettings
from tunewright.ingest.v1 import ingest_pb2

ROOT = Path(__file__).resolve().parents[3]


def test_meta_columns_are_scrubbed_unless_declared_safe(
    tmp_path: Path, pii_engine: PiiEngine, pii_config: PiiConfig
) -> None:
    source = tmp_path / "tickets.csv"
    source.write_text(
        "prompt,completion,requester_email,requester_name,category\n"
        '"How do I export contacts?","Open Exports and press Start.",'
        "jana.novak@example.org,Jana Novak,billing\n"
    )
    config = PiiConfig(
        entities=pii_config.entities,
        allow_list=pii_config.allow_list,
        safe_meta_columns=frozenset({"category"}),
    )
    scrubber = DatasetScrubber(pii_engine, config)
    result = curate(
        source,
        CurationConfig(file_format=FileFormat.CSV, filters=[], pii=config),
        work_dir=tmp_path / "out",
        quarantine=QuarantineWriter(tmp_path / "q"),
        scrubber=scrubber,
    )
    assert result.counts.accepted == 1
    published = (tmp_path / "out").rglob("*.jsonl")
    text = "".join(p.read_text() for p in published if "quarantine" not in str(p))
    assert "jana.novak@example.org" not in text and "Novak" not in text
    row = json.loads(result.files["train.jsonl"].read_text().splitlines()[0])
    assert row["requester_email"] == "<EMAIL_ADDRESS>"
    assert row["category"] == "billing"
    audit = scrubber.audit_report()["spans_by_entity_and_field"]
    assert audit["EMAIL_ADDRESS"] == {"meta.requester_email": 1}


def _hash_scrub(engine: PiiEngine, base: PiiConfig, key: bytes, scope: str = "ws/ds") -> str:
    config = PiiConfig(
        entities=base.entities, operators={"EMAIL_ADDRESS": "hash"}, hash_key=key, scope=scope
    )
    (out,) = DatasetScrubber(engine, config).scrub(["t"], ["Write to lena.berg@example.com."])
    return out


def test_hash_is_a_keyed_hmac(pii_engine: PiiEngine, pii_config: PiiConfig) -> None:
    a = _hash_scrub(pii_engine, pii_config, b"a" * 32)
    assert a == _hash_scrub(pii_engine, pii_config, b"a" * 32)  # stable for one key
    assert a != _hash_scrub(pii_engine, pii_config, b"b" * 32)  # another secret, another hash
    assert a != _hash_scrub(pii_engine, pii_config, b"a" * 32, scope="ws/other")
    digest = a.split("<EMAIL_ADDRESS:")[1].split(">")[0]
    assert len(digest) == 32  # 128 bits, not a 48-bit prefix
    with pytest.raises(PiiConfigError, match="secret key"):
        PiiConfig(operators={"EMAIL_ADDRESS": "hash"})


def test_deployment_key_is_made_once_with_0600(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path)
    key = hash_key(settings)
    path = settings.ingest_dir / KEY_FILE
    assert len(key) == 32 and hash_key(settings) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    configured = IngestSettings(data_dir=tmp_path, ingest={"pii_hash_key": "s" * 24})
    assert hash_key(configured) == b"s" * 24


def _policy(
    registries: Registries, section: IngestSection, **spec: object
) -> tuple[PiiConfig | None, list[FieldViolation]]:
    bad: list[FieldViolation] = []
    pb = ingest_pb2.IngestSpec(workspace="ws", dataset="ds", **spec)  # type: ignore[arg-type]
    config = convert.pii_config(pb, section, registries, allow=set(), hash_key=b"k" * 32, bad=bad)
    return config, bad


def test_keep_needs_the_server_policy(registries: Registries) -> None:
    keep = {"pii": ingest_pb2.PiiPolicy(operators={"PERSON": "keep"})}
    _, bad = _policy(registries, IngestSection(), **keep)
    assert [v.field for v in bad] == ["spec.pii.operators[PERSON]"]
    assert "ingest.pii_keep_allowed" in bad[0].description
    config, bad = _policy(registries, IngestSection(pii_keep_allowed=["PERSON"]), **keep)
    assert not bad and config is not None and config.operator_for("PERSON") == "keep"


def test_job_terms_do_not_join_the_allow_list_unless_trusted(registries: Registries) -> None:
    terms = {"terminology": {"the boss": "Maria Lopez"}}
    config, _ = _policy(registries, IngestSection(pii_allow_list=["AcmeCRM"]), **terms)
    assert config is not None and config.allow_list == {"AcmeCRM"}
    config, _ = _policy(registries, IngestSection(pii_trust_job_terms=True), **terms)
    assert config is not None and "Maria Lopez" in config.allow_list


def test_segments_keep_a_multiline_address_and_split_sentences() -> None:
    text = (
        "Ship it to:\n6750 Koskikatu Drive Apt. 864\nArtilleros, CO\nUruguay 64677\n\nThanks. Bye."
    )
    cut = [text[a:b] for a, b in segments(text)]
    assert cut == ["Ship it to:", "6750 Koskikatu Drive Apt. 864\nArtilleros, CO\nUruguay 64677",
                   "Thanks.", "Bye."]  # fmt: skip


def test_multiline_address_and_wrapped_card_are_scrubbed_whole(
    pii_engine: PiiEngine, pii_config: PiiConfig
) -> None:
    scrubber = DatasetScrubber(pii_engine, pii_config)
    (out,) = scrubber.scrub(
        ["t"], ["Deliver to 6750 Lake View Drive Apt. 864\nAustin, TX 78701\nCard:\n4111 1111 1111 1111\nThanks"]
    )  # fmt: skip
    assert "6750" not in out and "78701" not in out and "Apt" not in out
    assert "1111" not in out and out.endswith("Thanks")


def test_a_name_found_once_is_a_name_everywhere_in_the_record(
    pii_engine: PiiEngine, pii_config: PiiConfig
) -> None:
    scrubber = DatasetScrubber(pii_engine, pii_config)
    user, answer = scrubber.scrub(
        ["messages.user", "messages.assistant"],
        ["My name is Ingrid Solberg and my login fails.",
         "Sorry about that, Ingrid: resetting now. Solberg is the surname on the account."],
    )  # fmt: skip
    assert "Ingrid" not in user + answer and "Solberg" not in user + answer
    # a part NER saw capitalised is not wiped where the record uses it as a word
    (_, b) = scrubber.scrub(["t", "u"], ["Ask Acme Billing, said Tom.", "billing is down"])
    assert b == "billing is down"
    # an e-mail's local part names the person too
    (text,) = scrubber.scrub(["t"], ["From oskari.virtanen@example.fi: virtanen here, help!"])
    assert "virtanen here" not in text


def test_pii_detect_command_uses_the_service_engine(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "Call Anna Berg at +44 20 7946 0958 or anna.berg@example.co.uk."},
        {"id": "b", "text": "Order ORD-2024-558812 of Acme CloudSync v2.14.3 shipped."},
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tunewright.cli.main", "pii", "detect", "--data-dir", str(tmp_path)],
        input="".join(json.dumps(r) + "\n" for r in rows),
        capture_output=True, text=True, env=env, timeout=240, check=True, cwd=ROOT,
    )  # fmt: skip
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", "b"]
    text = rows[0]["text"]
    found = {text[s:e]: kind for s, e, kind in out[0]["spans"]}
    assert found == {
        "Anna Berg": "PERSON",
        "+44 20 7946 0958": "PHONE_NUMBER",
        "anna.berg@example.co.uk": "EMAIL_ADDRESS",
    }
    assert out[1]["spans"] == []  # an order id and a version are not PII
    bad = subprocess.run(
        [sys.executable, "-m", "tunewright.cli.main", "pii", "detect", "--data-dir", str(tmp_path)],
        input='{"id": 1, "text": "ok"}\nnot json\n',
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode != 0 and "line 2: not JSON" in bad.stderr
