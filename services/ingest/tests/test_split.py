"""The seeded split: stratified shares, determinism, and rows pinned to a split."""

from __future__ import annotations

from tunewright.ingest.split import PIN_EVAL, PIN_TRAIN, assign_eval


def test_each_label_keeps_its_share_and_the_same_seed_splits_the_same_way() -> None:
    labels = ["a"] * 50 + ["b"] * 10 + [None] * 20
    chosen = assign_eval(labels, eval_fraction=0.2, seed=3)
    assert sum(labels[i] == "a" for i in chosen) == 10
    assert sum(labels[i] == "b" for i in chosen) == 2
    assert sum(labels[i] is None for i in chosen) == 4
    assert assign_eval(labels, eval_fraction=0.2, seed=3) == chosen


def test_pinned_rows_go_to_their_split_whatever_the_fraction() -> None:
    labels = [PIN_EVAL, PIN_TRAIN, PIN_TRAIN, PIN_EVAL, "a", "a", "a", "a"]
    for fraction in (0.0, 0.5, 0.9):
        chosen = assign_eval(labels, eval_fraction=fraction, seed=1)
        assert {0, 3} <= chosen and not {1, 2} & chosen
        # only the unpinned rows are shared out by the fraction
        assert len(chosen - {0, 3}) == round(4 * fraction)
