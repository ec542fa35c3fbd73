"""Deterministic seeded train/eval split, stratified by a label column when there is one.

Within each stratum (label value, or one stratum without a label) the rows are shuffled by a
generator seeded with ``seed`` and the label, and ``round(n * eval_fraction)`` go to eval, so
each label keeps its share in both splits and the same input always splits the same way.
Near duplicates never straddle the split: the dedup step has already removed every row that
nearly duplicates a kept one, so each cluster is a single row by the time it is split.

A row whose pin (``SplitSpec.pin_by`` column) is ``train`` or ``eval`` goes to that split and
takes no part in the shuffle. The synth service uses this so a synthetic dataset keeps its
parent's eval rows in eval and puts every model-written row in train.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence


def assign_eval(
    labels: Sequence[str | None],
    *,
    eval_fraction: float,
    seed: int,
    pins: Sequence[str | None] | None = None,
) -> set[int]:
    """Indices (into ``labels``) that go to the eval split; ``pins`` (same length) pin rows."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if pins is not None and len(pins) != len(labels):
        raise ValueError(f"{len(pins)} pins for {len(labels)} rows")
    strata: dict[str | None, list[int]] = defaultdict(list)
    chosen: set[int] = set()
    for index, label in enumerate(labels):
        pin = pins[index] if pins is not None else None
        if pin == "eval":
            chosen.add(index)
        elif pin != "train":
            strata[label].append(index)
    for label in sorted(strata, key=lambda x: (x is not None, x or "")):
        members = strata[label]
        rng = random.Random(f"{seed}\x00{label}")
        k = round(len(members) * eval_fraction)
        chosen.update(rng.sample(members, k))
    return chosen
