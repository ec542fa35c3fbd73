"""Preferences.collect with the real simulated backend: rankings -> preference dataset version,
and a simulated backend never waits for people (waiting on Argilla: tests/e2e/test_argilla.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tunewright.core.artifacts import ArtifactRef, LocalArtifactStore
from tunewright.core.errors import FailedPrecondition
from tunewright.core.plugins import PluginManager
from tunewright.synth.preferences import Preferences
from tunewright.synth.v1 import synth_pb2


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
    assert version.labels == {"feedback_backend": "simulated", "simulated": "true"}
    assert list(version.parent_version_ids) == ["dsv-prompts"]
    body = await store.get_bytes(ArtifactRef.from_uri(version.splits["train"].uri))
    (row,) = [json.loads(line) for line in body.decode().splitlines()]
    assert row["chosen"] == "your order ships today, sorry!" and row["rejected"] == "no idea"
    assert row["annotators"] == ["simulated:token-f1"]

    # not enough rankings: a simulated backend fails at once rather than waiting 600 s
    started = time.monotonic()
    with pytest.raises(FailedPrecondition) as failed:
        await preferences.collect("job-2", _spec(wait_timeout_seconds=600, min_records=5))
    assert failed.value.reason == "NOT_ENOUGH_FEEDBACK" and time.monotonic() - started < 5
