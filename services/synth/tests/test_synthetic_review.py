"""Human review of synthetic rows, domain level: after the filters the surviving rows go to a
feedback backend's review extension, the run waits for decisions, rejected and unreviewed rows
are dropped with their own reasons, accepted ones carry ``reviewed_by``.

The ``simulated`` backend is the real plugin (plugins/tunewright-feedback). ``test.people``
stands in for people (a file-less backend whose decisions the test writes while the run
waits); the real Argilla server with annotator users: tests/e2e/test_argilla_review.py.
``test.rank-only`` is a backend without the review extension."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.errors import Cancelled, InvalidArgument
from tunewright.core.plugins import (
    FeedbackBackendRegistry,
    GeneratorRegistry,
    PluginManager,
    hookimpl,
)
from tunewright.synth import convert
from tunewright.synth.synthetic import SyntheticExamples
from tunewright.synth.v1 import synth_pb2

from .conftest import MemoryRegistry, ScriptedGenerator, add_seed_dataset, seed_rows

GENERATORS: list[ScriptedGenerator] = []


class People:
    """Reviews the test hands in: ``decisions[record_id] = (accepted, annotator)``."""

    simulated = False
    published: dict[str, list[dict[str, Any]]] = {}
    decisions: dict[str, tuple[bool, str]] = {}
    polls = 0

    def __init__(self, **_params: Any) -> None:
        pass

    def publish_review(self, dataset: str, rows: list[dict[str, Any]]) -> str:
        People.published[dataset] = list(rows)
        return f"memory://{dataset}"

    def collect_reviews(self, dataset: str) -> list[dict[str, Any]]:
        People.polls += 1
        return [
            {"record_id": rid, "accepted": accepted, "annotator": who}
            for rid, (accepted, who) in People.decisions.items()
        ]


class RankOnly:
    simulated = False

    def __init__(self, **_params: Any) -> None:
        pass

    def publish(self, dataset: str, records: list[dict[str, Any]]) -> str:
        return ""

    def records(self, dataset: str) -> list[dict[str, Any]]:
        return []

    def collect(self, dataset: str) -> list[dict[str, Any]]:
        return []


@hookimpl
def tw_register_generators(registry: GeneratorRegistry) -> None:
    def factory(**params: Any) -> ScriptedGenerator:
        GENERATORS.append(ScriptedGenerator())
        return GENERATORS[-1]

    registry.add(name="test.scripted", factory=factory, dataset_kinds=["sft"])


@hookimpl
def tw_register_feedback_backends(registry: FeedbackBackendRegistry) -> None:
    registry.add(name="test.people", factory=People, description="test stand-in for people")
    registry.add(name="test.rank-only", factory=RankOnly, description="no review extension")


@pytest.fixture(scope="module")
def plugins() -> Any:
    return PluginManager().load(builtins=[sys.modules[__name__]])


def _spec(**review: Any) -> synth_pb2.SynthJobSpec:
    spec = synth_pb2.SynthJobSpec(
        workspace="default",
        synthetic_examples=synth_pb2.SyntheticExamplesTask(
            seed_dataset=common_pb2.DatasetVersionRef(id="dsv-seed"),
            generator=common_pb2.PluginRef(name="test.scripted"),
            num_examples=10,
            max_synthetic_share=0.5,
            **review,
        ),
    )
    for name in ("minhash", "length", "quality"):  # no embedding model: fast
        spec.synthetic_examples.filters.add(name=name)
    return spec


async def _synth(tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any) -> Any:
    registry = MemoryRegistry()
    await add_seed_dataset(registry, artifacts, seed_rows())
    return SyntheticExamples(
        registry=registry, artifacts=artifacts, plugins=plugins, workdir=tmp_path
    )


def _adds_up(counts: dict[str, int]) -> bool:
    drops = sum(v for k, v in counts.items() if k.startswith("filtered_"))
    return counts["generated"] == counts["accepted"] + drops


async def test_the_simulated_backend_accepts_what_passed_the_filters_and_says_so(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    synth = await _synth(tmp_path, artifacts, plugins)
    plain = await synth.run("syn-plain", convert.synthesis_task(_spec(), "default"))
    spec = _spec(
        human_review=True,
        review_backend=common_pb2.PluginRef(name="simulated"),
        review_timeout_seconds=600,  # simulated reviews are there at once: never waits
    )
    started = time.monotonic()
    result = await synth.run("syn-sim", convert.synthesis_task(spec, "default"))
    assert time.monotonic() - started < 10
    c = result.counts
    assert c["accepted"] == plain.counts["accepted"] == c["review_published"] == 5
    assert "filtered_human_rejected" not in c and "filtered_unreviewed" not in c
    assert _adds_up(c)
    synthetic = [r for r in result.rows if r["synthetic"] == "true"]
    assert len(synthetic) == 5
    assert {r["reviewed_by"] for r in synthetic} == {"simulated:accept-filtered"}
    assert all("reviewed_by" not in r for r in result.rows if r["synthetic"] == "false")
    review = result.report["review"]
    assert review["backend"] == "simulated" and review["simulated"] is True
    assert review["dataset"] == "syn-sim-review" and review["published"] == review["reviewed"]
    # the simulated backend kept what it was shown, by record id (candidate index)
    backend = plugins.feedback_backends.get("simulated").factory(directory=tmp_path / "feedback"
                                                                 / "simulated")  # fmt: skip
    reviews = backend.collect_reviews("syn-sim-review")
    accepted = [x["index"] for x in result.report["candidates"] if x["fate"] == "accepted"]
    assert sorted(r["record_id"] for r in reviews) == sorted(f"syn-sim-{i}" for i in accepted)


async def test_rejected_and_unreviewed_rows_are_dropped_and_counted(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    """One row accepted, one rejected while the run waits, the rest unreviewed at timeout."""
    People.published.clear()
    People.decisions.clear()
    synth = await _synth(tmp_path, artifacts, plugins)
    spec = _spec(
        human_review=True,
        review_backend=common_pb2.PluginRef(name="test.people"),
        review_dataset="tickets-review",
        review_timeout_seconds=3,
        review_poll_interval_seconds=1,
    )
    seen: list[tuple[str, dict[str, float]]] = []

    async def progress(message: str, metrics: Any) -> None:
        seen.append((message, dict(metrics)))
        if message.startswith("waiting for reviews") and not People.decisions:
            first, second = People.published["tickets-review"][:2]
            People.decisions[first["record_id"]] = (True, "ana")
            People.decisions[second["record_id"]] = (False, "ben")

    started = time.monotonic()
    result = await synth.run("syn-ppl", convert.synthesis_task(spec, "default"), progress=progress)
    waited = time.monotonic() - started
    assert 3 <= waited < 15, waited
    c = result.counts
    assert c["review_published"] == 5
    assert c["accepted"] == 1 and c["filtered_human_rejected"] == 1
    assert c["filtered_unreviewed"] == 3 and _adds_up(c)
    (row,) = [r for r in result.rows if r["synthetic"] == "true"]
    assert row["reviewed_by"] == "ana"
    first = People.published["tickets-review"][0]
    assert row["messages"][0]["content"] == first["request"]
    assert set(first) == {"record_id", "request", "answer", "category", "generator"}
    fates = {x["index"]: x for x in result.report["candidates"]}
    rejected = next(x for x in fates.values() if x["fate"] == "human_rejected")
    assert rejected["rejected_by"] == ["ben"]
    waits = [m for msg, m in seen if msg.startswith("waiting for reviews")]
    assert waits[0] == {"step": 0.0, "total_steps": 5.0}
    assert {"step": 2.0, "total_steps": 5.0} in waits
    assert result.report["review"]["reviewed"] == 2


async def test_a_cancel_stops_the_wait_within_a_second(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    People.decisions.clear()
    synth = await _synth(tmp_path, artifacts, plugins)
    spec = _spec(
        human_review=True,
        review_backend=common_pb2.PluginRef(name="test.people"),
        review_timeout_seconds=3600,
        review_poll_interval_seconds=60,
    )
    cancel_at: list[float] = []

    def cancelled() -> bool:
        if People.polls and not cancel_at:  # the first poll found nothing: now cancel
            cancel_at.append(time.monotonic())
        return bool(cancel_at) and time.monotonic() - cancel_at[0] > 0.2

    People.polls = 0
    with pytest.raises(Cancelled, match="cancelled while waiting for reviews"):
        await synth.run("syn-cancel", convert.synthesis_task(spec, "default"), cancelled=cancelled)
    assert time.monotonic() - cancel_at[0] < 2


async def test_review_needs_a_backend_that_can_review(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    with pytest.raises(InvalidArgument) as err:
        convert.synthesis_task(_spec(human_review=True), "default")
    assert {v.field for v in err.value.field_violations} == {
        "spec.synthetic_examples.review_backend.name"
    }
    with pytest.raises(InvalidArgument) as err:
        convert.synthesis_task(_spec(review_dataset="x"), "default")
    assert [v.field for v in err.value.field_violations] == ["spec.synthetic_examples.human_review"]

    synth = await _synth(tmp_path, artifacts, plugins)
    GENERATORS.clear()
    spec = _spec(human_review=True, review_backend=common_pb2.PluginRef(name="test.rank-only"))
    with pytest.raises(InvalidArgument, match="cannot review synthetic rows") as err:
        await synth.run("syn-no", convert.synthesis_task(spec, "default"))
    assert err.value.reason == "REVIEW_NOT_SUPPORTED"
    assert not GENERATORS  # refused before anything was generated
    spec = _spec(human_review=True, review_backend=common_pb2.PluginRef(name="nope"))
    with pytest.raises(InvalidArgument, match="unknown feedback backend 'nope'"):
        await synth.run("syn-nope", convert.synthesis_task(spec, "default"))


def test_the_wait_helper_returns_at_the_deadline_with_the_last_poll() -> None:
    from tunewright.synth.preferences import poll_until

    polls: list[int] = []

    def poll() -> int:
        polls.append(len(polls))
        return len(polls)

    async def go() -> int:
        return await poll_until(
            poll,
            lambda n: n >= 100,
            timeout_s=0.3,
            interval_s=0.1,
            cancelled=lambda: False,
            cancel_message="x",
        )

    assert asyncio.run(go()) == len(polls) >= 2
