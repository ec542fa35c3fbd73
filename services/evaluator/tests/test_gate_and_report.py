"""The gate on real metrics and a paired bootstrap: a really better candidate passes, an
identical one fails (CI includes 0), a worse one fails with the reason named; the report
renders (JSON, Markdown, HTML with embedded PNGs)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import PluginManager
from tunewright.evaluator.comparison import Metric, paired_delta, score
from tunewright.evaluator.gate import GatePolicy, decide
from tunewright.evaluator.report import Report, Sample, render

rng = random.Random(7)
WORDS = (
    "restart the sync agent clear cache folder reset password invoice billing login account".split()
)
REFERENCES = [" ".join(rng.choices(WORDS, k=12)) for _ in range(60)]


def _noisy(text: str, keep: float, seed: int) -> str:
    r = random.Random(seed)
    return " ".join(w if r.random() < keep else r.choice(WORDS) for w in text.split())


GOOD = [_noisy(t, 0.9, i) for i, t in enumerate(REFERENCES)]
BASE = [_noisy(t, 0.5, 1000 + i) for i, t in enumerate(REFERENCES)]
POLICY = GatePolicy.from_mapping(
    {"rules": [{"metric": "rouge_l", "baseline": "base", "min_delta": 0.05}], "max_regression": 5.0}
)


@pytest.fixture(scope="module")
def metrics() -> dict[str, Metric]:
    registry = PluginManager().load().metrics
    return {
        name: Metric(name, registry.get(name).factory(), registry.get(name).higher_is_better)
        for name in ("rouge_l", "bleu", "token_f1")
    }


def _deltas(metrics: dict[str, Metric], candidate: list[str]) -> list:  # type: ignore[type-arg]
    return [
        paired_delta(m, "base", candidate, BASE, REFERENCES, samples=400) for m in metrics.values()
    ]


def test_a_better_candidate_passes(metrics: dict[str, Metric]) -> None:
    deltas = _deltas(metrics, GOOD)
    verdict = decide(POLICY, deltas)
    assert verdict.passed, verdict.reasons
    rouge = next(d for d in deltas if d.metric == "rouge_l")
    assert rouge.ci_low > 0 and rouge.delta > 0.2
    assert verdict.reasons[0].startswith("PASS rouge_l vs base")


def test_an_identical_candidate_fails_because_the_ci_includes_zero(
    metrics: dict[str, Metric],
) -> None:
    deltas = _deltas(metrics, BASE)
    rouge = next(d for d in deltas if d.metric == "rouge_l")
    assert rouge.delta == 0 and rouge.ci_low == 0 == rouge.ci_high
    verdict = decide(POLICY, deltas)
    assert not verdict.passed
    assert "95% CI includes 0" in verdict.reasons[0]


def test_a_worse_candidate_fails_with_the_reason_named(metrics: dict[str, Metric]) -> None:
    worse = [_noisy(t, 0.2, 2000 + i) for i, t in enumerate(REFERENCES)]
    verdict = decide(POLICY, _deltas(metrics, worse))
    assert not verdict.passed
    assert verdict.reasons[0].startswith("FAIL rouge_l vs base")
    assert "improvement below the minimum +0.0500" in verdict.reasons[0]
    assert any(r.startswith("FAIL bleu vs base: regressed") for r in verdict.reasons)


def test_a_missing_comparison_fails_and_bad_policies_are_refused() -> None:
    assert decide(POLICY, []).reasons == ["FAIL rouge_l vs base: not measured"]
    with pytest.raises(InvalidArgument) as info:
        GatePolicy.from_mapping({"rules": [{"metric": "rouge_l"}], "max_regresion": 1})
    fields = {v.field for v in info.value.field_violations}
    assert fields == {"gate.max_regresion", "gate.rules[0]"}


def test_the_report_renders(metrics: dict[str, Metric], tmp_path: Path) -> None:
    values = [
        score(m, role, preds, REFERENCES, samples=200)
        for m in metrics.values()
        for role, preds in (("candidate", GOOD), ("base", BASE))
    ]
    deltas = _deltas(metrics, GOOD)
    report = Report(
        run_id="eval-1",
        candidate="mv-1",
        values=values,
        deltas=deltas,
        verdict=decide(POLICY, deltas),
        samples=[
            Sample(prompt=f"q{i} <b>", reference=r, outputs={"candidate": g, "base": b})
            for i, (r, g, b) in enumerate(zip(REFERENCES[:5], GOOD, BASE, strict=False))
        ],
        loss_curve=[(s, 3.0 / (1 + s / 10)) for s in range(0, 60, 5)],
    )
    files = render(report)
    assert set(files) == {"report.json", "report.md", "report.html", "deltas.png", "loss.png"}
    for name in ("deltas.png", "loss.png"):
        assert files[name].startswith(b"\x89PNG")
        (tmp_path / name).write_bytes(files[name])
    assert json.loads(files["report.json"])["verdict"]["passed"] is True
    page = files["report.html"].decode()
    assert "PASSED" in page and "q0 &lt;b&gt;" in page and "data:image/png;base64," in page
    assert "| rouge_l | base |" in files["report.md"].decode()


def test_corpus_bleu_bootstrap_from_sample_stats_equals_recomputing_it(
    metrics: dict[str, Metric],
) -> None:
    # the same draws, two ways: summing sacrebleu's per-sample statistics, and re-scoring every
    # resampled corpus with sacrebleu (what the bootstrap did before the statistics existed)
    from tunewright.evaluator import comparison

    rng = random.Random(3)
    words = "reset the password then restart sync agent cache invoice".split()
    refs = [" ".join(rng.choices(words, k=9)) for _ in range(25)]
    preds = [" ".join(rng.choices(words, k=8)) for _ in range(25)]
    bleu = metrics["bleu"]
    assert bleu.sample_stats is not None
    idx = comparison._indices(len(refs), 50, seed=1)
    fast = comparison._resampled(bleu, preds, refs, idx)
    slow = comparison._resampled(Metric("bleu", bleu.fn.__call__, True), preds, refs, idx)
    assert fast.tolist() == pytest.approx(slow.tolist())
