"""Preferences.collect with the real simulated backend: rankings -> preference dataset version,
and a simulated backend never waits for people (waiting on Argilla: tests/e2e/test_argilla.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.errors import Cancelled, FailedPrecondition
from tunewright.core.plugins import PluginManager
from tunewright.synth.preferences import Preferences
from tunewright.synth.v1 import synth_pb2

from . import people


class NoRegistry:
    """collect() never asks the registry; anything that does is a bug here."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"collect called registry.{name}")


def _preferences(tmp_path: Path) -> tuple[Preferences, LocalArtifactStore]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    plugins = PluginManager().load()
    return Preferences(
        registry=NoRegistry(), artifacts=store, plugins=plugins, workdir=tmp_path / "synth"
    ), store


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


async def test_simulated_rankings_become_pairs_at_once_even_when_asked_to_wait(
    tmp_path: Path,
) -> None:
    preferences, store = _preferences(tmp_path)
    backend = preferences.plugins.feedback_backends.get("simulated").factory(
        directory=tmp_path / "synth" / "feedback" / "simulated"
    )
    backend.publish(
        "prefs-t",
        [
            {
                "record_id": "r1",
                "prompt": [{"role": "user", "content": "my order is late"}],
                "reference": "sorry, your order ships today",
                "responses": ["no idea", "your order ships today, sorry!", "sorry ok"],
                "prompts_dataset_version_id": "dsv-prompts",
            }
        ],
    )
    calls: list[str] = []

    async def progress(message: str, metrics: dict[str, float]) -> None:
        calls.append(message)

    started = time.monotonic()
    collected = await preferences.collect(
        "job-1", _spec(wait_timeout_seconds=600, min_records=1), progress
    )
    assert time.monotonic() - started < 5 and calls == []
    assert collected.simulated and collected.pairs == 1 and collected.annotators == 1
    version = collected.dataset_version
    assert version.labels == {
        "feedback_backend": "simulated",
        "simulated": "true",
        "agreement_records": "0",  # one annotator per record: no agreement to measure
        "annotator": "simulated:rubric",
    }
    assert collected.agreement == 0.0 and collected.agreement_records == 0
    assert list(version.parent_version_ids) == ["dsv-prompts"]
    body = await store.get_bytes(ArtifactRef.from_uri(version.splits["train"].uri))
    (row,) = [json.loads(line) for line in body.decode().splitlines()]
    # the default rubric: only the answer that ends a sentence scores; the rest tie and the
    # longer one ranks last
    assert row["chosen"] == "your order ships today, sorry!" and row["rejected"] == "sorry ok"
    assert row["annotators"] == ["simulated:rubric"]

    # not enough rankings: a simulated backend fails at once rather than waiting 600 s
    started = time.monotonic()
    with pytest.raises(FailedPrecondition) as failed:
        await preferences.collect("job-2", _spec(wait_timeout_seconds=600, min_records=5))
    assert failed.value.reason == "NOT_ENOUGH_FEEDBACK" and time.monotonic() - started < 5


def _record(record_id: str, responses: list[str]) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "prompt": [{"role": "user", "content": f"question {record_id}"}],
        "responses": responses,
        "prompts_dataset_version_id": "dsv-prompts",
    }


async def test_agreement_counts_only_shared_records_and_every_drop_has_a_reason(
    tmp_path: Path,
) -> None:
    preferences = Preferences(
        registry=NoRegistry(),
        artifacts=LocalArtifactStore(tmp_path / "artifacts"),
        plugins=PluginManager().load(builtins=[people]),
        workdir=tmp_path / "synth",
    )
    records = [
        _record("two-agree", ["a", "b", "c"]),
        _record("two-split", ["a", "b", "c"]),
        _record("alone", ["a", "b", "c"]),
        _record("same", ["same", " same "]),
    ]
    rankings = [
        {"record_id": "two-agree", "annotator": "ann", "ranking": [0, 1, 2]},
        {"record_id": "two-agree", "annotator": "bob", "ranking": [0, 2, 1]},
        {"record_id": "two-split", "annotator": "ann", "ranking": [1, 0, 2]},
        {"record_id": "two-split", "annotator": "bob", "ranking": [2, 0, 1]},
        {"record_id": "alone", "annotator": "ann", "ranking": [2, 1, 0]},
        {"record_id": "same", "annotator": "ann", "ranking": [0, 1]},
        {"record_id": "same", "annotator": "bob", "ranking": [0, 1]},
        {"record_id": "gone", "annotator": "ann", "ranking": [0, 1]},  # not published
    ]
    people.RANKINGS["prefs-panel"] = (records, rankings)

    def spec(min_annotators: int) -> synth_pb2.SynthJobSpec:
        return synth_pb2.SynthJobSpec(
            workspace="default",
            feedback_collection=synth_pb2.FeedbackCollectionTask(
                feedback_backend={"name": "panel"},
                feedback_dataset="prefs-panel",
                output_dataset="support-preferences",
                min_annotators=min_annotators,
            ),
        )

    collected = await preferences.collect("job-panel", spec(1))
    # agreement over the two records two people ranked (1.0 and 0.5), not the lone one
    assert collected.agreement_records == 2 and collected.agreement == pytest.approx(0.75)
    assert collected.pairs == 3  # two-agree, two-split, alone
    assert collected.drops == {
        "below_min_annotators": 0,
        "identical_responses": 1,
        "unknown_record": 1,
    }
    counts = collected.dataset_version.counts
    assert counts.total == 5 and counts.accepted == 3 and counts.filtered == 2
    assert counts.total == counts.accepted + sum(collected.drops.values())

    strict = await preferences.collect("job-panel-2", spec(2))
    assert strict.pairs == 2 and strict.drops["below_min_annotators"] == 1
    assert strict.agreement_records == 2
    assert strict.dataset_version.counts.total == 2 + sum(strict.drops.values())


async def test_a_cancel_stops_a_collection_that_waits_for_people(tmp_path: Path) -> None:
    preferences = Preferences(
        registry=NoRegistry(),
        artifacts=LocalArtifactStore(tmp_path / "artifacts"),
        plugins=PluginManager().load(builtins=[people]),
        workdir=tmp_path / "synth",
    )
    cancel_at = time.monotonic() + 1.5

    def cancelled() -> bool:
        return time.monotonic() >= cancel_at

    spec = synth_pb2.SynthJobSpec(
        workspace="default",
        feedback_collection=synth_pb2.FeedbackCollectionTask(
            feedback_backend={"name": "nobody"},
            feedback_dataset="prefs-nobody",
            output_dataset="support-preferences",
            min_records=1,
            wait_timeout_seconds=3600,
            poll_interval_seconds=600,  # the cancel must not wait for the next poll
        ),
    )
    started = time.monotonic()
    with pytest.raises(Cancelled, match="cancelled while waiting for feedback"):
        await preferences.collect("job-wait", spec, cancelled=cancelled)
    assert time.monotonic() - started < 4
