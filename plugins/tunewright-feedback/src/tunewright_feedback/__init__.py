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
labelling tool runs. By default (``rule: rubric``) it ranks like a support lead with a checklist,
and never looks at the record's reference answer, so the preferences it produces are not the
evaluation's metric in disguise (the evaluator scores ROUGE-L / token F1 against references).
A response gains a point for each of:

- **product**: it names every product the ticket names (``key_terms``, e.g. the glossary's
  canonical names) and no other one (naming another costs the point);
- **steps**: it gives 2-6 numbered steps (one step: half a point);
- **ends cleanly**: its last line ends a sentence or is a short sign-off after one (not cut
  off by the token budget);
- **length**: 25-150 words;

plus half a point times the share of its steps that are whole sentences. It loses half a point
for each invented specific not in the ticket (a price, a URL, an e-mail address, a phone number,
a "within N days" promise) and for a repeated line, and up to a point for repeating itself (the
share of its word trigrams that are repeats: a generation loop). Ties go to the shorter response, then to the earlier one. Rankings carry the annotator
``simulated:rubric``. ``rule: token-f1`` ranks by token F1 against the reference instead
(annotator ``simulated:token-f1``): circular when the evaluation uses the same references, kept
for comparisons.

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

ANNOTATORS = {"rubric": "simulated:rubric", "token-f1": "simulated:token-f1"}
REVIEWER = "simulated:accept-filtered"

_NUMBERED_STEP = re.compile(r"^\s*\d{1,2}[.)]\s+\S", re.MULTILINE)
_CLEAN_END = re.compile(r"[.!?)\]\"'”’]\s*$")
# specifics a support answer must not make up (only counted when the ticket lacks them)
_SPECIFICS = {
    "price": re.compile(r"[$€£]\s?\d|\b\d+(?:[.,]\d+)?\s?(?:dollars|euros|pounds|usd|eur)\b", re.I),
    "url": re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.I),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),
    "phone": re.compile(r"(?:\+?\d[\s().-]?){7,}\d"),
    "promise": re.compile(r"\bwithin\s+\d+\s+(?:hours?|days?|weeks?|business days)\b", re.I),
}


def rubric_score(response: str, ticket: str, key_terms: Sequence[str] = ()) -> float:
    """The ``rubric`` rule's score of one response to one ticket (see the module doc)."""
    score = 0.0
    named = [t for t in key_terms if _mentions(ticket, t)]
    if named:
        if all(_mentions(response, t) for t in named):
            score += 1
        if any(_mentions(response, t) for t in key_terms if t not in named):
            score -= 1
    steps = len(_NUMBERED_STEP.findall(response))
    score += 1.0 if 2 <= steps <= 6 else 0.5 if steps == 1 else 0.0
    lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
    step_lines = [line for line in lines if _NUMBERED_STEP.match(line)]
    if step_lines:  # each step a whole sentence, not a fragment the budget cut
        score += 0.5 * sum(bool(_CLEAN_END.search(line)) for line in step_lines) / len(step_lines)
    if lines and _ends_cleanly(lines):
        score += 1
    if 25 <= len(response.split()) <= 150:
        score += 1
    for pattern in _SPECIFICS.values():
        if pattern.search(response) and not pattern.search(ticket):
            score -= 0.5
    if len(lines) != len(set(lines)):
        score -= 0.5
    # a generation loop repeats itself: the share of repeated word trigrams costs up to 1
    words = response.lower().split()
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    if trigrams:
        score -= 1 - len(set(trigrams)) / len(trigrams)
    return round(score, 6)


def _ends_cleanly(lines: Sequence[str]) -> bool:
    """The last line ends a sentence, or is a short sign-off ("Best regards, Ana") after one."""
    last = lines[-1]
    if _CLEAN_END.search(last):
        return True
    after_sentence = len(lines) > 1 and re.search(r"[.!?,]\s*$", lines[-2]) is not None
    return after_sentence and len(last.split()) <= 6 and not _NUMBERED_STEP.match(last)


def _mentions(text: str, term: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE) is not None


def _ticket(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt if m.get("role") != "assistant")


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

    def __init__(
        self,
        *,
        directory: Path,
        rule: str = "rubric",
        key_terms: Sequence[str] = (),
        **_params: Any,
    ) -> None:
        if rule not in ANNOTATORS:
            raise ValueError(f"unknown simulated rule {rule!r}; rules: {', '.join(ANNOTATORS)}")
        if isinstance(key_terms, str) or not all(isinstance(t, str) for t in key_terms):
            raise ValueError("key_terms must be a list of strings (e.g. product names)")
        self.rule = rule
        self.key_terms = tuple(key_terms)
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
            if self.rule == "rubric":
                ticket = _ticket(record.get("prompt", ""))
                scores = [rubric_score(r, ticket, self.key_terms) for r in responses]
            else:
                scores = [token_f1(r, record.get("reference", "")) for r in responses]
            order = sorted(range(len(responses)), key=lambda i: (-scores[i], len(responses[i]), i))
            rankings.append(
                {
                    "record_id": record["record_id"],
                    "ranking": order,
                    "annotator": ANNOTATORS[self.rule],
                }
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
        description="Deterministic stand-in for human annotators: ranks responses by a "
        "checklist that never reads the reference (right product, numbered steps, clean end, "
        "length, nothing invented; params rule, key_terms), or by token F1 with rule=token-f1; "
        "reviews accept every row that passed the automatic filters. Marked simulated.",
    )
