"""The drift detectors on generated support traffic: quiet on samples of one distribution,
loud (with evidence) when a new product and new question types arrive; the statistics keep
their level on pure noise; the plugin registers through the entry point."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tunewright_drift import stats
from tunewright_drift.detectors import REFUSAL, InputDrift, OutcomeDrift, OutputDrift, TopicMix
from tunewright_drift.embeddings import HashingEmbedder

from tunewright.core.plugins import PluginManager

ROOT = Path(__file__).resolve().parents[3]
ALPHA = 0.0025  # the monitor's default: 0.01 over four detectors


@pytest.fixture(scope="module")
def gen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "trafficgen", ROOT / "bench" / "monitor" / "trafficgen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["trafficgen"] = module
    spec.loader.exec_module(module)

    def rows(seed: int, n: int, shift: float = 0.0) -> list[dict[str, Any]]:
        return [
            {
                "prompt": i["prompt"],
                "response": i["response"],
                "category": i["attributes"]["category"],
                **i["feedback"],
            }
            for i in module.TrafficGenerator(seed=seed, shift=shift).interactions(n)
        ]

    return rows


def test_the_plugin_registers_four_detectors() -> None:
    registry = PluginManager().load().drift_detectors
    assert {"input-embedding", "topic-mix", "output", "outcome"} <= set(registry.names())
    assert registry.get("output").factory().baseline == "traffic"


def test_same_distribution_is_quiet_and_a_new_product_is_flagged_with_evidence(gen: Any) -> None:
    training, baseline = gen(1, 300), gen(2, 120)
    same, shifted = gen(3, 120), gen(4, 120, shift=0.5)
    for detector in (InputDrift(permutations=500), TopicMix(), OutputDrift(), OutcomeDrift()):
        reference = training if detector.baseline == "training" else baseline
        quiet = detector.detect(reference, same, alpha=ALPHA)
        loud = detector.detect(reference, shifted, alpha=ALPHA)
        assert not quiet.drifted, quiet.summary
        assert loud.drifted, loud.summary
    topic = TopicMix().detect(training, shifted, alpha=ALPHA)
    assert set(topic.evidence["new_categories"]) == {
        "call_quality",
        "voice_assistant",
        "data_residency",
    }
    drift = InputDrift(permutations=200).detect(training, shifted, alpha=ALPHA)
    # the new product's name was never in training: counted, not named (it could be anything
    # the scrubber missed); named words all come from the training prompts
    vocabulary = {w.lower() for r in training for w in re.findall(r"[A-Za-z][\w'-]+", r["prompt"])}
    named = [t["term"] for t in drift.evidence["terms_grown"]]
    assert "acmevoice" not in named and "acmevoice" not in drift.summary
    assert set(named) <= vocabulary
    assert drift.evidence["unseen_terms_grown"] >= 1
    output = OutputDrift().detect(baseline, shifted, alpha=ALPHA).evidence
    assert output["refusal_rate"]["current"] > 0.15 > output["refusal_rate"]["reference"]


def test_the_tests_keep_their_level_on_noise() -> None:
    rng = np.random.default_rng(0)
    p_values = []
    for _ in range(40):
        points = rng.normal(size=(60, 5))
        d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
        p_values.append(stats.mmd_permutation_test(d2, 30, permutations=99)[0].p_value)
    assert 0.3 < float(np.mean(p_values)) < 0.7  # uniform under the null
    assert sum(p < 0.05 for p in p_values) <= 6
    assert stats.rate_increase_test(5, 100, 5, 100).p_value > 0.5
    assert stats.rate_increase_test(5, 100, 30, 100).p_value < 1e-4
    assert stats.rate_increase_test(30, 100, 5, 100).p_value > 0.99  # one-sided: fewer is fine
    with pytest.raises(ValueError, match=">= 2 points"):
        stats.mmd_permutation_test(np.zeros((3, 3)), 2)


def test_refusals_and_hashing_distances() -> None:
    assert REFUSAL.search("Sorry, I can only help with AcmeCRM questions.")
    assert REFUSAL.search("Unfortunately I cannot help with that product.")
    assert not REFUSAL.search("1. Open Billing > Invoices and download the invoice.")
    d2 = HashingEmbedder().squared_distances(["reset my password", "reset my password", "refund"])
    assert d2[0, 1] == pytest.approx(0.0) and d2[0, 2] == pytest.approx(2.0)


def test_the_minilm_embedder_loads_offline() -> None:
    # the [minilm] extra: `make install` always has it (the synth service depends on it), so
    # this runs for real rather than skipping
    from tunewright_drift.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    d2 = embedder.squared_distances(
        ["I cannot log in to my account", "login fails with my password", "the invoice is wrong"]
    )
    assert d2[0, 1] < d2[0, 2]  # meaning, not shared words

    bounded = MiniLMEmbedder(cache_size=2)
    first = bounded.embed(["a", "b", "c"])  # more texts than the cache holds: still all there
    assert first.shape == (3, 384) and len(bounded._cache) == 2
    again = bounded.embed(["a", "c"])  # "a" was evicted and is computed again, the same
    assert np.allclose(again, first[[0, 2]], atol=1e-5)
    assert set(bounded._cache) == {hashlib.sha1(t.encode()).digest() for t in ("a", "c")}


def test_only_label_like_categories_are_named() -> None:
    rows = [{"category": c} for c in ["billing"] * 40 + ["login"] * 40]
    odd = [{"category": c} for c in ["billing"] * 20 + ["call me at 555 0100"] * 20]
    odd += [{"category": "jane@example.com"}] * 20 + [{"category": "x" * 65}] * 20
    result = TopicMix().detect(rows, odd, alpha=ALPHA)
    assert result.evidence["new_categories"] == ["other"]
    assert set(result.evidence["shares"]) == {"billing", "login", "other"}
    assert "555" not in result.summary and "@" not in str(result.evidence)
