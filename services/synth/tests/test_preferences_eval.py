"""Held-out preference pairs: with ``eval_fraction`` the collected pairs are split into train
and eval (seeded, disjoint, both in the dataset version); without it the version is exactly
what it was before (one train split, same id). Real simulated backend, real artifact store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.errors import InvalidArgument
from tunewright.core.plugins import PluginManager
from tunewright.synth.preferences import Preferences, split_pairs
from tunewright.synth.v1 import synth_pb2

from .test_preferences import NoRegistry


def _preferences(tmp_path: Path) -> tuple[Preferences, LocalArtifactStore]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    preferences = Preferences(
        registry=NoRegistry(),
        artifacts=store,
        plugins=PluginManager().load(),
        workdir=tmp_path / "synth",
    )
    backend = preferences.plugins.feedback_backends.get("simulated").factory(
        directory=tmp_path / "synth" / "feedback" / "simulated"
    )
    backend.publish(
        "prefs-t",
        [
            {
                "record_id": f"r{i:02d}",
                "prompt": [{"role": "user", "content": f"my order {i} is late"}],
                "reference": f"sorry, order {i} ships today",
                "responses": ["no idea", f"sorry, order {i} ships today!", "ok"],
                "prompts_dataset_version_id": "dsv-prompts",
            }
            for i in range(10)
        ],
    )
    return preferences, store


def _spec(**task: Any) -> synth_pb2.SynthJobSpec:
    return synth_pb2.SynthJobSpec(
        workspace="default",
        feedback_collection=synth_pb2.FeedbackCollectionTask(
            feedback_backend={"name": "simulated"},
            feedback_dataset="prefs-t",
            output_dataset="support-preferences",
            **task,
        ),
    )


async def _ids(store: LocalArtifactStore, ref: Any) -> list[str]:
    body = await store.get_bytes(ArtifactRef.from_uri(ref.uri))
    return [json.loads(line)["record_id"] for line in body.decode().splitlines()]


async def test_an_eval_fraction_holds_out_a_seeded_share_of_the_pairs(tmp_path: Path) -> None:
    preferences, store = _preferences(tmp_path)
    whole = (await preferences.collect("job-0", _spec())).dataset_version
    assert list(whole.splits) == ["train"] and whole.counts.eval == 0

    collected = await preferences.collect("job-1", _spec(eval_fraction=0.2, eval_seed=7))
    version = collected.dataset_version
    assert sorted(version.splits) == ["eval", "train"]
    assert collected.pairs == 10
    assert (version.counts.train, version.counts.eval, version.counts.accepted) == (8, 2, 10)
    train, held = (
        await _ids(store, version.splits["train"]),
        await _ids(store, version.splits["eval"]),
    )
    assert len(held) == 2 and not set(train) & set(held)
    assert sorted(train + held) == await _ids(store, whole.splits["train"])
    # the split is part of the content: another split is another version
    assert version.id != whole.id and version.content_hash != whole.content_hash

    again = (
        await preferences.collect("job-2", _spec(eval_fraction=0.2, eval_seed=7))
    ).dataset_version
    assert again.id == version.id and await _ids(store, again.splits["eval"]) == held
    other = (
        await preferences.collect("job-3", _spec(eval_fraction=0.2, eval_seed=8))
    ).dataset_version
    assert await _ids(store, other.splits["eval"]) != held  # seed 8 holds out other pairs


async def test_an_eval_fraction_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    preferences, _ = _preferences(tmp_path)
    with pytest.raises(InvalidArgument) as refused:
        await preferences.collect("job-1", _spec(eval_fraction=1.0))
    assert refused.value.field_violations[0].field == "spec.feedback_collection.eval_fraction"


def test_split_pairs_keeps_a_pair_on_each_side_and_order_within_each() -> None:
    rows = [{"n": i} for i in range(5)]
    assert split_pairs(rows, 0.0, 1) == (rows, [])
    assert split_pairs(rows[:1], 0.5, 1) == (rows[:1], [])  # one pair: nothing to hold out
    train, held = split_pairs(rows, 0.01, 1)  # rounds to 0, still holds one out
    assert len(held) == 1 and len(train) == 4
    train, held = split_pairs(rows, 0.99, 1)  # rounds to 5, keeps one to train on
    assert len(train) == 1 and len(held) == 4
    assert train == sorted(train, key=lambda r: r["n"]) and held == sorted(
        held, key=lambda r: r["n"]
    )
    with pytest.raises(ValueError, match="eval_fraction"):
        split_pairs(rows, -0.1, 1)
