"""Feedback backends: where preference candidates go to be ranked, and where rankings come from.

Contract (what the synth service calls): ``factory(directory=Path, **params)`` returns a
backend with

- ``publish(dataset, records) -> str``: ``records`` are dicts ``{"record_id", "prompt"
  (chat messages), "reference" (the dataset's own answer, may be ""), "responses" (list of
  str)}``; returns where people review them (a URL, or a path for backends without a UI);
- ``records(dataset) -> list[dict]``: the records as published;
- ``collect(dataset) -> list[dict]``: one ``{"record_id", "ranking" (response indexes, best
  first), "annotator"}`` per submitted ranking (several per record with several annotators);
- ``simulated`` (attribute): True when no person ranked; the preference dataset version says
  so. Human backends set False and may need time: the synth service polls them while a
  collection task allows it (``wait_timeout_seconds``).

Optional review extension (synthetic examples with ``human_review``; a backend without these
two methods is refused for review with a clear error):

- ``publish_review(dataset, rows) -> str``: ``rows`` are dicts ``{"record_id", "request",
  "answer", "category" (may be ""), "generator"}``, synthetic rows that passed the automatic
  filters; people accept or reject each; returns where they review them;
- ``collect_reviews(dataset) -> list[dict]``: one ``{"record_id", "accepted" (bool),
  "annotator"}`` per submitted review (several per row with several reviewers).

Backends here: ``simulated``. People ranking in Argilla: ``argilla`` (plugins/tunewright-argilla).

``simulated`` is a deterministic stand-in for human annotators, for demos and CI where no
labelling tool runs. Its rule: a response ranks higher the larger its token F1 (SQuAD
normalisation) against the record's reference answer; ties go to the shorter response, then
to the earlier one. Rankings it produces are marked with the annotator ``simulated:token-f1``
so every dataset built from them says the preferences were simulated.

Its review rule: every published row is accepted (the rows it gets have already passed the
automatic filters), with the annotator ``simulated:accept-filtered``, so the job still says no
person looked at them.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewright.core.plugins import FeedbackBackendRegistry, hookimpl

ANNOTATOR = "simulated:token-f1"
REVIEWER = "simulated:accept-filtered"


def _tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    p, r = _tokens(prediction), _tokens(reference)
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or common == 0:
        return float(p == r)
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


class SimulatedFeedback:
    """Rankings by the documented rule above; records are kept in ``<directory>/<dataset>.jsonl``."""

    simulated = True

    def __init__(self, *, directory: Path, **_params: Any) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _file(self, dataset: str, kind: str = "") -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", dataset):
            raise ValueError(f"feedback dataset name {dataset!r} must be [A-Za-z0-9_.-]{{1,128}}")
        return self.directory / f"{dataset}{kind}.jsonl"

    def publish(self, dataset: str, records: Sequence[dict[str, Any]]) -> str:
        path = self._file(dataset)
        with path.open("a", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return str(path)

    def records(self, dataset: str) -> list[dict[str, Any]]:
        path = self._file(dataset)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def collect(self, dataset: str) -> list[dict[str, Any]]:
        rankings = []
        for record in self.records(dataset):
            responses: list[str] = record["responses"]
            reference = record.get("reference", "")
            order = sorted(
                range(len(responses)),
                key=lambda i: (-token_f1(responses[i], reference), len(responses[i]), i),
            )
            rankings.append(
                {"record_id": record["record_id"], "ranking": order, "annotator": ANNOTATOR}
            )
        return rankings

    # --- review extension -----------------------------------------------------------------

    def publish_review(self, dataset: str, rows: Sequence[dict[str, Any]]) -> str:
        """Keeps the rows in ``<directory>/<dataset>.review.jsonl`` (a row published again
        replaces its earlier copy)."""
        path = self._file(dataset, ".review")
        kept = {r["record_id"]: r for r in self._review_rows(path)}
        kept.update({r["record_id"]: dict(r) for r in rows})
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept.values()),
            encoding="utf-8",
        )
        return str(path)

    def collect_reviews(self, dataset: str) -> list[dict[str, Any]]:
        """Every published row accepted by ``simulated:accept-filtered`` (the documented rule)."""
        return [
            {"record_id": r["record_id"], "accepted": True, "annotator": REVIEWER}
            for r in self._review_rows(self._file(dataset, ".review"))
        ]

    @staticmethod
    def _review_rows(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@hookimpl
def tw_register_feedback_backends(registry: FeedbackBackendRegistry) -> None:
    registry.add(
        name="simulated",
        factory=SimulatedFeedback,
        description="Deterministic stand-in for human annotators: ranks responses by token F1 "
        "against the reference answer (ties: shorter first); reviews accept every row that "
        "passed the automatic filters. Marked simulated.",
    )
