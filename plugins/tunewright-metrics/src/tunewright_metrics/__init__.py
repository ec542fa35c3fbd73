"""tunewright's built-in text metrics, registered through ``tw_register_metrics``.

Each factory returns a metric: ``metric(predictions, references) -> float`` computes the value
on a whole set; metrics that are a mean over samples also offer ``per_sample(...)``, which
the evaluator's paired bootstrap uses (corpus metrics such as BLEU are recomputed on each
resample instead). Values are those of the reference libraries: rouge-score (F-measure, with
stemming) and sacrebleu (corpus BLEU / chrF, 0-100); exact match and token F1 follow the SQuAD
evaluation script's normalisation; classification F1 is macro-averaged over the labels that
occur in the references or predictions, like ``sklearn.metrics.f1_score(average="macro")``.
The libraries are imported when a metric is built, not when the plugin loads.

``judge_win_rate`` (module :mod:`tunewright_metrics.judge`) is registered with
``needs="judge"``: a judge model compares candidate and baseline answers in both orders.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunewright.core.plugins import MetricRegistry, hookimpl
from tunewright_metrics.judge import JudgeWinRate

Texts = Sequence[str]


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _check(predictions: Texts, references: Texts) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions for {len(references)} references: they must pair up"
        )


class MeanMetric:
    """A metric whose value is the mean of per-sample scores."""

    def per_sample(self, predictions: Texts, references: Texts) -> list[float]:
        raise NotImplementedError

    def __call__(self, predictions: Texts, references: Texts) -> float:
        scores = self.per_sample(predictions, references)
        return sum(scores) / len(scores) if scores else 0.0


class Rouge(MeanMetric):
    def __init__(self, kind: str) -> None:
        from rouge_score import rouge_scorer

        self.kind = kind
        self.scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)

    def per_sample(self, predictions: Texts, references: Texts) -> list[float]:
        _check(predictions, references)
        return [
            float(self.scorer.score(ref, pred)[self.kind].fmeasure)
            for pred, ref in zip(predictions, references, strict=True)
        ]


class ExactMatch(MeanMetric):
    def per_sample(self, predictions: Texts, references: Texts) -> list[float]:
        _check(predictions, references)
        return [
            float(normalize_answer(p) == normalize_answer(r))
            for p, r in zip(predictions, references, strict=True)
        ]


class TokenF1(MeanMetric):
    def per_sample(self, predictions: Texts, references: Texts) -> list[float]:
        _check(predictions, references)
        out = []
        for pred, ref in zip(predictions, references, strict=True):
            p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
            common = sum((Counter(p) & Counter(r)).values())
            if not p or not r:
                out.append(float(p == r))
            elif common == 0:
                out.append(0.0)
            else:
                precision, recall = common / len(p), common / len(r)
                out.append(2 * precision * recall / (precision + recall))
        return out


class SacreBleu:
    """Corpus BLEU or chrF (0-100) from sacrebleu; not a mean, so no per-sample scores.

    It offers per-sample sufficient statistics instead (sacrebleu's own: n-gram matches and
    totals, lengths), whose sum gives the corpus score: a bootstrap resamples and sums them
    rather than re-tokenising every resample (sacrebleu's paired bootstrap does the same)."""

    def __init__(self, kind: str) -> None:
        import sacrebleu
        from sacrebleu.metrics import BLEU, CHRF

        self.kind = kind
        self._corpus = sacrebleu.corpus_bleu if kind == "bleu" else sacrebleu.corpus_chrf
        # the defaults of corpus_bleu / corpus_chrf, so both paths give the same score
        self._metric = BLEU() if kind == "bleu" else CHRF()

    def __call__(self, predictions: Texts, references: Texts) -> float:
        _check(predictions, references)
        return float(self._corpus(list(predictions), [list(references)]).score)

    def sample_stats(self, predictions: Texts, references: Texts) -> list[list[int]]:
        _check(predictions, references)
        stats = self._metric._extract_corpus_statistics(list(predictions), [list(references)])
        return [[int(x) for x in row] for row in stats]

    def from_stats(self, totals: Sequence[int]) -> float:
        return float(self._metric._compute_score_from_stats([int(x) for x in totals]).score)


class ClassificationF1:
    """Macro F1 of predicted labels (normalised text) against reference labels."""

    def __call__(self, predictions: Texts, references: Texts) -> float:
        _check(predictions, references)
        preds = [normalize_answer(p) for p in predictions]
        refs = [normalize_answer(r) for r in references]
        labels = sorted(set(preds) | set(refs))
        if not labels:
            return 0.0
        total = 0.0
        for label in labels:
            tp = sum(1 for p, r in zip(preds, refs, strict=True) if p == label and r == label)
            fp = sum(1 for p, r in zip(preds, refs, strict=True) if p == label and r != label)
            fn = sum(1 for p, r in zip(preds, refs, strict=True) if p != label and r == label)
            total += 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return total / len(labels)


def _factory(cls: type[Any], *args: Any) -> Any:
    def build(**_params: Any) -> Any:
        return cls(*args)

    return build


@hookimpl
def tw_register_metrics(registry: MetricRegistry) -> None:
    for name, kind in (("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL")):
        registry.add(
            name=name,
            factory=_factory(Rouge, kind),
            description=f"{kind} F-measure (rouge-score, stemmed), mean over samples.",
            higher_is_better=True,
        )
    registry.add(
        name="bleu",
        factory=_factory(SacreBleu, "bleu"),
        description="Corpus BLEU (sacrebleu, 0-100).",
        higher_is_better=True,
    )
    registry.add(
        name="chrf",
        factory=_factory(SacreBleu, "chrf"),
        description="Corpus chrF (sacrebleu, 0-100).",
        higher_is_better=True,
    )
    registry.add(
        name="exact_match",
        factory=_factory(ExactMatch),
        description="Share of predictions equal to the reference after SQuAD normalisation.",
        higher_is_better=True,
    )
    registry.add(
        name="token_f1",
        factory=_factory(TokenF1),
        description="SQuAD token F1 between prediction and reference, mean over samples.",
        higher_is_better=True,
    )
    registry.add(
        name="classification_f1",
        factory=_factory(ClassificationF1),
        description="Macro F1 of predicted labels against reference labels.",
        higher_is_better=True,
    )
    registry.add(
        name="judge_win_rate",
        factory=JudgeWinRate,
        needs="judge",
        description="LLM-as-judge pairwise net win rate of the candidate over a baseline "
        "((wins - losses) / judged samples), both answer orders, unparseable verdicts counted "
        "apart. The judge is the evaluation spec's judge generator.",
        higher_is_better=True,
    )
