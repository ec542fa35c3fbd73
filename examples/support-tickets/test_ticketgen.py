"""The support-ticket generator: deterministic, dirty as documented, truth aligned with data."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ticketgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ticketgen", HERE / "ticketgen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ticketgen"] = module
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_bytes_other_seed_other_bytes(ticketgen: ModuleType, tmp_path: Path) -> None:
    a = ticketgen.write_tickets(tmp_path / "a", 500, seed=1).read_bytes()
    b = ticketgen.write_tickets(tmp_path / "b", 500, seed=1).read_bytes()
    c = ticketgen.write_tickets(tmp_path / "c", 500, seed=2).read_bytes()
    assert a == b != c


def test_truth_matches_every_line(ticketgen: ModuleType, tmp_path: Path) -> None:
    path = ticketgen.write_tickets(tmp_path, 3000, seed=4)
    lines = path.read_bytes().split(b"\n")[:-1]
    truth = ticketgen.read_truth(path.with_suffix(".truth.jsonl"))
    assert len(lines) == len(truth) == 3000
    kinds = Counter(t["kind"] for t in truth)
    assert {"clean", "exact_duplicate", "near_duplicate", "mislabeled", "junk"} <= set(kinds)
    junk = Counter(t["junk"] for t in truth if t["kind"] == "junk")
    assert set(junk) == {"empty", "slang", "off_topic", "foreign", "truncated_json", "invalid_utf8"}
    for line, t in zip(lines, truth, strict=True):
        if t["kind"] == "junk" and t["junk"] == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                line.decode("utf-8")
            continue
        if t["kind"] == "junk" and t["junk"] == "truncated_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        row = json.loads(line)
        text = {"user": row["messages"][0]["content"], "assistant": row["messages"][1]["content"]}
        for item in t["pii"]:  # every planted value is really in the named turn
            assert item["value"] in text[item["turn"]], (t["line"], item)
        if t["kind"] == "exact_duplicate":
            assert line == lines[t["duplicate_of_line"] - 1]
        if t["kind"] == "mislabeled":
            assert row["category"] == t["labeled"] != t["category"]
    types = Counter(item["type"] for t in truth for item in t["pii"])
    assert set(types) == set(ticketgen.PII_TYPES)


def test_product_variants_and_preference_pairs(ticketgen: ModuleType, tmp_path: Path) -> None:
    path = ticketgen.write_tickets(tmp_path, 400, seed=0)
    products = {
        json.loads(x)["product"]
        for x in path.read_text(errors="replace").splitlines()
        if x.startswith('{"ticket_id"') and x.endswith("}")
    }
    assert len(products) > 8  # canonical names and their variants
    pairs = [
        json.loads(x) for x in ticketgen.write_preferences(tmp_path, 50).read_text().splitlines()
    ]
    assert len(pairs) == 50
    assert all(
        set(p) == {"prompt", "chosen", "rejected"} and p["chosen"] != p["rejected"] for p in pairs
    )


def test_cli_writes_the_files(
    ticketgen: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ticketgen.main(["--rows", "1000", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "tickets.jsonl").exists() and (tmp_path / "tickets.truth.jsonl").exists()
    assert capsys.readouterr().out.strip().endswith("tickets.jsonl")
