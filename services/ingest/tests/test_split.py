"""The seeded split: stratified shares, determinism, and rows pinned to a split."""

from __future__ import annotations

import pytest

from tunewright.ingest.split import assign_eval


def test_each_label_keeps_its_share_and_the_same_seed_splits_the_same_way() -> None:
    labels = ["a"] * 50 + ["b"] * 10 + [None] * 20
    chosen = assign_eval(labels, eval_fraction=0.2, seed=3)
    assert sum(labels[i] == "a" for i in chosen) == 10
    assert sum(labels[i] == "b" for i in chosen) == 2
    assert sum(labels[i] is None for i in chosen) == 4
    assert assign_eval(labels, eval_fraction=0.2, seed=3) == chosen


def test_pinned_rows_go_to_their_split_whatever_the_fraction() -> None:
    labels = ["a", "b", "a", "b", "a", "a", "a", "a"]
    pins = ["eval", "train", "train", "eval", None, None, "other", None]
    for fraction in (0.0, 0.5, 0.9):
        chosen = assign_eval(labels, eval_fraction=fraction, seed=1, pins=pins)
        assert {0, 3} <= chosen and not {1, 2} & chosen
        # only the unpinned rows (an unknown pin is none) are shared out by the fraction
        assert len(chosen - {0, 3}) == round(4 * fraction)
    with pytest.raises(ValueError, match="pins for"):
        assign_eval(labels, eval_fraction=0.1, seed=1, pins=pins[:3])
