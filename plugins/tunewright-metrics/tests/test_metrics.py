"""Every metric equals its reference library (or the reference formula) on fixed inputs."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score

from tunewright.core.plugins import PluginManager

PREDICTIONS = [
    "Restart the sync agent, then clear the cache folder.",
    "The invoice is sent on the first business day.",
    "Open Settings > Users and click Reset password.",
    "the answer",
]
REFERENCES = [
    "Restart the sync agent and clear the local cache folder.",
    "Invoices are sent on the first business day of the month.",
    "Go to Settings > Users, select the user and click Reset password.",
    "The answer!",
]


@pytest.fixture(scope="module")
def metrics():  # type: ignore[no-untyped-def]
    return PluginManager().load().metrics


@pytest.mark.parametrize(
    ("name", "kind"), [("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL")]
)
def test_rouge_matches_rouge_score(metrics, name: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    metric = metrics.get(name).factory()
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    expected = [
        scorer.score(r, p)[kind].fmeasure for p, r in zip(PREDICTIONS, REFERENCES, strict=True)
    ]
    assert metric.per_sample(PREDICTIONS, REFERENCES) == pytest.approx(expected)
    assert metric(PREDICTIONS, REFERENCES) == pytest.approx(sum(expected) / len(expected))


def test_bleu_and_chrf_match_sacrebleu(metrics) -> None:  # type: ignore[no-untyped-def]
    bleu = metrics.get("bleu").factory()
    chrf = metrics.get("chrf").factory()
    assert bleu(PREDICTIONS, REFERENCES) == pytest.approx(
        sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    )
    assert chrf(PREDICTIONS, REFERENCES) == pytest.approx(
        sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score
    )
    assert not hasattr(bleu, "per_sample")  # a corpus metric: not a mean over samples


@pytest.mark.parametrize(("name", "corpus"), [("bleu", "corpus_bleu"), ("chrf", "corpus_chrf")])
def test_summed_sample_stats_give_the_corpus_score(metrics, name: str, corpus: str) -> None:  # type: ignore[no-untyped-def]
    # what the bootstrap resamples: any multiset of samples, summed, equals sacrebleu's score on
    # those samples
    metric = metrics.get(name).factory()
    stats = metric.sample_stats(PREDICTIONS, REFERENCES)
    for picks in ([0, 1, 2, 3], [3, 3, 0], [1, 1, 1, 2, 0]):
        totals = [sum(col) for col in zip(*(stats[i] for i in picks), strict=True)]
        expected = getattr(sacrebleu, corpus)(
            [PREDICTIONS[i] for i in picks], [[REFERENCES[i] for i in picks]]
        ).score
        assert metric.from_stats(totals) == pytest.approx(expected)


def test_exact_match_and_token_f1_follow_squad(metrics) -> None:  # type: ignore[no-untyped-def]
    em = metrics.get("exact_match").factory()
    f1 = metrics.get("token_f1").factory()
    assert em.per_sample(PREDICTIONS, REFERENCES) == [0.0, 0.0, 0.0, 1.0]
    # SQuAD: "the invoice is sent on first business day" vs "invoices are sent on first business
    # day of month" -> common {sent, on, first, business, day} = 5; P = 5/7, R = 5/9
    scores = f1.per_sample(PREDICTIONS, REFERENCES)
    assert scores[1] == pytest.approx(2 * (5 / 7) * (5 / 9) / (5 / 7 + 5 / 9))
    assert scores[3] == 1.0


def test_classification_f1_matches_sklearn_macro(metrics) -> None:  # type: ignore[no-untyped-def]
    predicted = ["billing", "login", "login", "sync", "billing", "Billing."]
    actual = ["billing", "login", "sync", "sync", "login", "billing"]
    metric = metrics.get("classification_f1").factory()
    expected = f1_score(actual, [p.lower().strip(".") for p in predicted], average="macro")
    assert metric(predicted, actual) == pytest.approx(expected)


def test_mismatched_lengths_are_refused(metrics) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metrics.get("token_f1").factory()(["a", "b"], ["a"])
