"""The drift detectors. Each compares the current window of scrubbed traffic with a reference
and answers with a p-value (P(a difference this large | no drift)); the caller decides the
significance level (the monitor splits one family-wise level over the detectors it runs).

Rows are mappings with ``prompt``, ``response``, ``category`` (a helpdesk label, may be
empty), ``thumbs`` (+1 / 0 / -1), ``escalated`` and ``resolved``. ``baseline`` says what a
detector compares with: ``training`` (the model's training rows: what it was made for) or
``traffic`` (the model's first windows in production: how it behaved when it shipped; the
training rows carry no feedback, and their answers were written by people, not the model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunewright_drift import stats
from tunewright_drift.embeddings import make_embedder

Row = Mapping[str, Any]

# answers that decline to help (a model out of its depth on a new product says these)
REFUSAL = re.compile(
    r"\b(sorry|unfortunately)\b.{0,60}\b(can(no|')t|cannot|unable|only help|not able)\b"
    r"|\bI (can(no|')t|cannot|am unable to) (help|assist)",
    re.IGNORECASE | re.DOTALL,
)
WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]+")
# a category that can be named in an event; attributes are not scrubbed, so anything else (free
# text, an e-mail address pasted into a label) is counted as "other"
CATEGORY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
OTHER_CATEGORY = "other"


@dataclass(frozen=True)
class DriftResult:
    detector: str
    statistic: float
    p_value: float
    alpha: float
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return self.p_value < self.alpha


def _sample(rows: Sequence[Row], limit: int, seed: int) -> list[Row]:
    if len(rows) <= limit:
        return list(rows)
    picks = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
    return [rows[int(i)] for i in sorted(picks)]


def _words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)}


def _term_shift(
    vocabulary: set[str], reference: Sequence[str], current: Sequence[str], top: int = 8
) -> tuple[list[dict], int]:
    """Words whose document share grew most from reference to current (evidence, not a test).

    Only words of the training ``vocabulary`` are named: a word seen only in traffic may be
    something the scrubber missed (a name, an account number), so those are only counted.
    """

    def shares(texts: Sequence[str]) -> dict[str, float]:
        counts: dict[str, int] = {}
        for text in texts:
            for word in _words(text):
                counts[word] = counts.get(word, 0) + 1
        return {w: c / max(len(texts), 1) for w, c in counts.items()}

    ref, cur = shares(reference), shares(current)
    grown = [w for w in cur if cur[w] - ref.get(w, 0.0) > 0.05]
    unseen = sum(1 for w in grown if w not in vocabulary)
    named = sorted(
        (w for w in grown if w in vocabulary), key=lambda w: cur[w] - ref.get(w, 0.0), reverse=True
    )[:top]
    terms = [
        {"term": w, "reference_share": round(ref.get(w, 0.0), 3), "current_share": round(cur[w], 3)}
        for w in named
    ]
    return terms, unseen


def _category(value: Any) -> str:
    text = str(value or "")
    if not text:
        return ""
    return text if CATEGORY.match(text) else OTHER_CATEGORY


class InputDrift:
    """Embedding distribution of prompts: MMD permutation test against the training prompts."""

    name = "input-embedding"
    baseline = "training"

    def __init__(
        self,
        embedder: str = "hashing",
        permutations: int = 1000,
        max_reference: int = 400,
        max_current: int = 400,
        seed: int = 0,
    ) -> None:
        self.embedder = make_embedder(embedder)
        self.permutations = permutations
        self.max_reference = max_reference
        self.max_current = max_current
        self.seed = seed

    def detect(
        self, reference: Sequence[Row], current: Sequence[Row], *, alpha: float
    ) -> DriftResult:
        ref = [str(r["prompt"]) for r in _sample(reference, self.max_reference, self.seed)]
        cur = [str(r["prompt"]) for r in _sample(current, self.max_current, self.seed + 1)]
        distances = self.embedder.squared_distances(ref + cur)
        result, bandwidth = stats.mmd_permutation_test(
            distances, len(ref), permutations=self.permutations, seed=self.seed
        )
        vocabulary = {w for r in reference for w in _words(str(r["prompt"]))}
        terms, unseen = _term_shift(vocabulary, ref, cur)
        summary = f"prompt embeddings ({self.embedder.name}) MMD²={result.statistic:.4f}, p={result.p_value:.4f}"
        if terms:
            summary += "; more frequent now: " + ", ".join(t["term"] for t in terms[:5])
        if unseen:
            summary += f"; {unseen} word(s) unseen in training now common"
        return DriftResult(
            self.name,
            result.statistic,
            result.p_value,
            alpha,
            summary,
            {
                "test": "MMD permutation (Gaussian kernel, median bandwidth)",
                "embedder": self.embedder.name,
                "bandwidth": bandwidth,
                "permutations": self.permutations,
                "reference_rows": len(ref),
                "current_rows": len(cur),
                "terms_grown": terms,
                # words in over 5% more of the window's prompts that training never had
                "unseen_terms_grown": unseen,
            },
        )


class TopicMix:
    """Category mix (helpdesk labels): chi-square homogeneity test against the training rows."""

    name = "topic-mix"
    baseline = "training"

    def __init__(self, field: str = "category") -> None:
        self.field = field

    def detect(
        self, reference: Sequence[Row], current: Sequence[Row], *, alpha: float
    ) -> DriftResult:
        ref = [_category(r.get(self.field)) for r in reference]
        cur = [_category(r.get(self.field)) for r in current]
        ref, cur = [c for c in ref if c], [c for c in cur if c]
        result, shares = stats.mix_shift_test(ref, cur)
        new = sorted(c for c, s in shares.items() if s["reference"] == 0 and s["current"] > 0)
        moved = sorted(shares, key=lambda c: abs(shares[c]["current"] - shares[c]["reference"]))
        summary = f"{self.field} mix chi²={result.statistic:.1f}, p={result.p_value:.4g}"
        if new:
            summary += f"; unseen in training: {', '.join(new)}"
        return DriftResult(
            self.name,
            result.statistic,
            result.p_value,
            alpha,
            summary,
            {
                "test": "chi-square homogeneity",
                "field": self.field,
                "labelled_reference_rows": len(ref),
                "labelled_current_rows": len(cur),
                "new_categories": new,
                "shares": {
                    c: {k: round(v, 3) for k, v in shares[c].items()} for c in reversed(moved)
                },
            },
        )


class OutputDrift:
    """Model answers: length (KS test) and refusal rate (Fisher) against the first windows."""

    name = "output"
    baseline = "traffic"

    def detect(
        self, reference: Sequence[Row], current: Sequence[Row], *, alpha: float
    ) -> DriftResult:
        def lengths(rows: Sequence[Row]) -> list[float]:
            return [float(len(str(r.get("response", "")).split())) for r in rows]

        def refusals(rows: Sequence[Row]) -> int:
            return sum(1 for r in rows if REFUSAL.search(str(r.get("response", ""))))

        length = stats.ks_test(lengths(reference), lengths(current))
        ref_refusals, cur_refusals = refusals(reference), refusals(current)
        refusal = stats.rate_increase_test(ref_refusals, len(reference), cur_refusals, len(current))
        p_value = min(1.0, 2 * min(length.p_value, refusal.p_value))  # Bonferroni over two
        ref_rate = ref_refusals / max(len(reference), 1)
        cur_rate = cur_refusals / max(len(current), 1)
        return DriftResult(
            self.name,
            max(length.statistic, refusal.statistic),
            p_value,
            alpha,
            f"answer length KS={length.statistic:.3f} (p={length.p_value:.4g}); refusal rate "
            f"{ref_rate:.1%} -> {cur_rate:.1%} (p={refusal.p_value:.4g})",
            {
                "test": "KS on answer words + one-sided Fisher on refusals, Bonferroni x2",
                "length_ks": length.statistic,
                "length_p": length.p_value,
                "mean_words": {
                    "reference": float(np.mean(lengths(reference))) if reference else 0.0,
                    "current": float(np.mean(lengths(current))) if current else 0.0,
                },
                "refusal_rate": {"reference": ref_rate, "current": cur_rate},
                "refusal_p": refusal.p_value,
            },
        )


class OutcomeDrift:
    """User outcomes: thumbs-down and escalation rates (one-sided Fisher) against the first windows."""

    name = "outcome"
    baseline = "traffic"

    def detect(
        self, reference: Sequence[Row], current: Sequence[Row], *, alpha: float
    ) -> DriftResult:
        def count(rows: Sequence[Row], key: str) -> int:
            if key == "negative":
                return sum(1 for r in rows if int(r.get("thumbs") or 0) < 0)
            return sum(1 for r in rows if _truthy(r.get(key)))

        evidence: dict[str, Any] = {"test": "one-sided Fisher exact per rate, Bonferroni x2"}
        p_values = []
        parts = []
        for key in ("negative", "escalated"):
            ref_hits, cur_hits = count(reference, key), count(current, key)
            result = stats.rate_increase_test(ref_hits, len(reference), cur_hits, len(current))
            p_values.append(result.p_value)
            ref_rate = ref_hits / max(len(reference), 1)
            cur_rate = cur_hits / max(len(current), 1)
            evidence[f"{key}_rate"] = {"reference": ref_rate, "current": cur_rate}
            evidence[f"{key}_p"] = result.p_value
            parts.append(f"{key} {ref_rate:.1%} -> {cur_rate:.1%} (p={result.p_value:.4g})")
        p_value = min(1.0, 2 * min(p_values))
        statistic = max(
            evidence["negative_rate"]["current"] - evidence["negative_rate"]["reference"],
            evidence["escalated_rate"]["current"] - evidence["escalated_rate"]["reference"],
        )
        return DriftResult(self.name, statistic, p_value, alpha, "; ".join(parts), evidence)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
