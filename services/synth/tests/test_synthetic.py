"""Synthetic examples, domain level: thin categories, the prompts, every filter with its
reason, the cap, the provenance columns, and counts that add up. The generator is the
scripted one from conftest.py (outputs fixed in advance) or the real ``local`` generator on a
tiny model; artifacts are a real local store; the registry is the in-memory stand-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import LocalArtifactStore
from tunewright.core.errors import FailedPrecondition, InvalidArgument
from tunewright.core.plugins import GeneratorRegistry, PluginManager, hookimpl
from tunewright.registry.v1 import registry_pb2
from tunewright.synth import convert
from tunewright.synth.synthetic import (
    SyntheticExamples,
    allocate,
    category_counts,
    parse_request,
    parse_score,
    quality_reason,
    seeds_from_rows,
    thin_categories,
)
from tunewright.synth.v1 import synth_pb2

from .conftest import MemoryRegistry, ScriptedGenerator, add_seed_dataset, seed_rows

SCRIPTED: list[ScriptedGenerator] = []


@hookimpl
def tw_register_generators(registry: GeneratorRegistry) -> None:
    def factory(**params: Any) -> ScriptedGenerator:
        SCRIPTED.append(ScriptedGenerator())
        return SCRIPTED[-1]

    registry.add(name="test.scripted", factory=factory, dataset_kinds=["sft"])


@pytest.fixture(scope="module")
def plugins() -> Any:
    return PluginManager().load(builtins=[sys.modules[__name__]])


def _spec(**task: Any) -> synth_pb2.SynthJobSpec:
    filters = task.pop("filters", None)
    spec = synth_pb2.SynthJobSpec(
        workspace="default",
        synthetic_examples=synth_pb2.SyntheticExamplesTask(
            seed_dataset=common_pb2.DatasetVersionRef(id="dsv-seed"),
            generator=common_pb2.PluginRef(name=task.pop("generator", "test.scripted")),
            **task,
        ),
    )
    for name, params in filters or []:
        ref = spec.synthetic_examples.filters.add(name=name)
        ref.params.update(params)
    return spec


async def _run(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any, spec: Any, **seed: Any
) -> Any:
    registry = MemoryRegistry()
    await add_seed_dataset(registry, artifacts, seed_rows(), **seed)
    synth = SyntheticExamples(
        registry=registry, artifacts=artifacts, plugins=plugins, workdir=tmp_path
    )
    return await synth.run("syn-test", convert.synthesis_task(spec, "default"))


def test_thin_categories_allocation_and_counts_from_the_report() -> None:
    seeds = seeds_from_rows(seed_rows(), "category")
    counts = category_counts(seeds, None, "category")
    assert counts == {"billing": 10, "login": 2, "shipping": 4}
    assert thin_categories(counts, 0.5) == ["login", "shipping"]
    assert allocate(10, ["login", "shipping"], counts) == {"login": 6, "shipping": 4}
    assert allocate(1, ["login", "shipping"], counts) == {"login": 1}
    report = {"split": {"stratify_by": "category", "eval_by_label": {"a": {"train": 9, "eval": 1}}}}
    assert category_counts(seeds, report, "category") == {"a": 10}
    assert category_counts(seeds, report, "topic")["billing"] == 10  # another field: count rows


def test_parsing_and_heuristics() -> None:
    assert parse_request('1. "New request: Where is my order?"\n\nMore text') == (
        "Where is my order?"
    )
    assert parse_request("  \n ") is None
    # the judge's score is the last standalone 1-5, never the scale it quotes
    assert parse_score("On a 1-5 scale, this answer deserves a 4") == 4
    assert parse_score("Score (1 - 5): 2") == 2
    assert parse_score("4") == 4 and parse_score("Score: 5/5") == 5
    assert parse_score("I would rate it 3.5 out of 5, so 3") == 3
    assert parse_score("4 on a 1 to 5 scale") == 4 and parse_score("4 out of 5") == 4
    assert parse_score("10 out of 10") is None and parse_score("no idea") is None
    assert quality_reason("ok ok ok ok ok ok ok ok", "fine answer here", 0.5, 0.5) == "repetitive"
    assert quality_reason("%%% ### @@@", "fine answer", 0.5, 0.5) == "not_text"
    assert quality_reason("Where is it?", "where is  it?", 0.5, 0.5) == "echo"
    assert quality_reason("Where is it?", "In the depot.", 0.5, 0.5) is None


async def test_duplicates_and_junk_are_filtered_and_the_rest_flagged_synthetic(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    """Default filters (minhash, embedding with the offline MiniLM, length, quality)."""
    result = await _run(
        tmp_path, artifacts, plugins, _spec(num_examples=10, max_synthetic_share=0.5)
    )
    assert result.targets == {"login": 6, "shipping": 4}
    assert result.counts == {
        "generated": 10,
        "accepted": 5,
        "seed_rows": 16,
        "seed_train_rows": 16,
        "synthetic_cap": 16,
        "filtered_near_duplicate_existing": 1,
        "filtered_near_duplicate_generated": 2,
        "filtered_too_short": 1,
        "filtered_unparseable": 1,
    }
    fates = {c["index"]: c for c in result.report["candidates"]}
    assert fates[0]["fate"] == "near_duplicate_existing" and fates[0]["jaccard"] == 1.0
    assert fates[0]["duplicate_of"].startswith("seed:")
    assert fates[3] == {
        "index": 3,
        "category": "login",
        "fate": "near_duplicate_generated",
        "duplicate_of": "candidate:2",
        "jaccard": fates[3]["jaccard"],
    }
    assert "How do I reset" not in json.dumps(result.report)  # the report carries no text

    synthetic = [r for r in result.rows if r["synthetic"] == "true"]
    seeds = [r for r in result.rows if r["synthetic"] == "false"]
    assert len(seeds) == 16 and len(synthetic) == 5
    requests = [r["messages"][0]["content"] for r in synthetic]
    assert "How do I reset my password when the reset email never arrives?" not in requests
    assert "Which courier delivers orders to Iceland, and is there a tracking link?" in requests
    for row in synthetic:
        assert row["synthetic_generator"] == "test.scripted"
        assert row["synth_job_id"] == "syn-test"
        assert row["category"] in {"login", "shipping"}
        prompt = json.loads(row["synthetic_prompt"])
        assert prompt[0]["role"] == "system" and row["category"] in prompt[1]["content"]
        assert [t["role"] for t in row["messages"]] == ["user", "assistant"]
    # the seed requests shown in a prompt come from the same category
    login_prompt = json.loads(
        next(r for r in synthetic if r["category"] == "login")["synthetic_prompt"]
    )
    assert (
        "two-factor" in login_prompt[1]["content"] and "invoice" not in login_prompt[1]["content"]
    )
    assert set(result.report["timings_s"]) >= {"minhash_s", "embedding_s", "generation_s"}
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1  # seed embeddings cached


async def test_embedding_catches_a_paraphrase_minhash_misses(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    spec = _spec(
        num_examples=1,
        target_categories=["login"],
        filters=[("minhash", {}), ("embedding", {"threshold": 0.8})],
    )
    SCRIPTED.clear()
    registry = MemoryRegistry()
    await add_seed_dataset(registry, artifacts, seed_rows())
    synth = SyntheticExamples(
        registry=registry, artifacts=artifacts, plugins=plugins, workdir=tmp_path
    )
    task = convert.synthesis_task(spec, "default")
    # the first login request of the script is replaced by a paraphrase of a seed
    original = ScriptedGenerator.__init__

    def paraphrasing(self: ScriptedGenerator, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.scripts["login"][0] = (
            "My password reset email never shows up, how can I reset the password?"
        )

    ScriptedGenerator.__init__ = paraphrasing  # type: ignore[method-assign]
    try:
        result = await synth.run("syn-para", task)
    finally:
        ScriptedGenerator.__init__ = original  # type: ignore[method-assign]
    (candidate,) = result.report["candidates"]
    assert candidate["fate"] == "similar_existing", candidate
    assert candidate["cosine"] >= 0.8 and candidate["duplicate_of"].startswith("seed:")


async def test_judge_and_the_synthetic_share_cap(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    spec = _spec(
        num_examples=10,
        max_synthetic_share=0.2,  # 16 seed rows -> at most 4 synthetic rows
        filters=[("minhash", {}), ("length", {}), ("quality", {}), ("judge", {"min_score": 3})],
    )
    result = await _run(tmp_path, artifacts, plugins, spec)
    c = result.counts
    assert c["synthetic_cap"] == 4
    assert c["filtered_judge_low_score"] == 1  # the Iceland answer scores 2
    assert c["accepted"] == 4 and "filtered_over_cap" not in c
    assert c["generated"] == c["accepted"] + sum(
        v for k, v in c.items() if k.startswith("filtered_")
    )
    judged = [x for x in result.report["candidates"] if "judge_score" in x]
    assert {x["judge_score"] for x in judged} == {2, 4}

    capped = await _run(tmp_path, artifacts, plugins, _spec(num_examples=10, max_synthetic_share=0.1,
                                                             filters=[("minhash", {})]))  # fmt: skip
    assert capped.counts["synthetic_cap"] == 1
    assert capped.counts["accepted"] == 1 and capped.counts["filtered_over_cap"] >= 1


async def test_bad_tasks_are_refused_with_every_field(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    spec = _spec(num_examples=0, max_synthetic_share=1.5, human_review=True,
                 filters=[("bloom", {}), ("minhash", {"thresh": 1})])  # fmt: skip
    with pytest.raises(InvalidArgument) as err:
        convert.synthesis_task(spec, "default")
    fields = {v.field for v in err.value.field_violations}
    assert fields == {
        "spec.synthetic_examples.num_examples",
        "spec.synthetic_examples.max_synthetic_share",
        "spec.synthetic_examples.review_backend.name",  # human_review needs a backend
        "spec.synthetic_examples.filters[0].name",
        "spec.synthetic_examples.filters[1].params",
    }
    with pytest.raises(InvalidArgument, match="unknown generator 'nope'"):
        await _run(tmp_path, artifacts, plugins, _spec(num_examples=1, generator="nope"))
    with pytest.raises(InvalidArgument, match="local generator needs a model version"):
        await _run(tmp_path, artifacts, plugins, _spec(num_examples=1, generator="local"))
    balanced = [r for r in seed_rows() if r["category"] == "billing"]
    registry = MemoryRegistry()
    await add_seed_dataset(registry, artifacts, balanced)
    synth = SyntheticExamples(
        registry=registry, artifacts=artifacts, plugins=plugins, workdir=tmp_path
    )
    with pytest.raises(FailedPrecondition, match="name target_categories"):
        await synth.run("syn-x", convert.synthesis_task(_spec(num_examples=2), "default"))


async def test_a_real_run_with_the_local_generator_on_a_tiny_model(
    tmp_path: Path, artifacts: LocalArtifactStore, plugins: Any
) -> None:
    """The `local` plugin generates with a tiny Llama registered as a model version (untrained:
    the text is noise); every step after it is the same as for a real model."""
    from tunewright_trl.models import TinyBaseModel

    rows = seed_rows()
    base = TinyBaseModel(
        "llama-xxs", corpus=[t["content"] for r in rows for t in r["messages"]], seed=7
    )
    folder = tmp_path / "trained"
    base.causal_lm().save_pretrained(str(folder / "model"), safe_serialization=True)
    base.tokenizer().save_pretrained(str(folder / "tokenizer"))
    weights = await artifacts.put_dir(folder)
    registry = MemoryRegistry()
    await add_seed_dataset(registry, artifacts, rows)
    registry.models["mv-tiny"] = registry_pb2.ModelVersion(
        id="mv-tiny",
        base_model="tiny:llama-xxs",
        weights=common_pb2.ArtifactRef(uri=weights.uri, sha256=weights.sha256),
        labels={"seed": "7"},
    )
    spec = _spec(
        generator="local",
        model=common_pb2.ModelVersionRef(id="mv-tiny"),
        num_examples=4,
        max_synthetic_share=0.5,
        generation=common_pb2.GenerationConfig(max_new_tokens=16, seed=1, batch_size=4),
        filters=[("minhash", {}), ("length", {"min_chars": 1})],
    )
    synth = SyntheticExamples(
        registry=registry, artifacts=artifacts, plugins=plugins, workdir=tmp_path / "work"
    )
    (tmp_path / "work").mkdir()
    result = await synth.run("syn-local", convert.synthesis_task(spec, "default"))
    c = result.counts
    assert c["generated"] == 4
    assert c["generated"] == c["accepted"] + sum(
        v for k, v in c.items() if k.startswith("filtered_")
    )
    assert result.report["generator"] == "local:mv-tiny"
    synthetic = [r for r in result.rows if r["synthetic"] == "true"]
    assert len(synthetic) == c["accepted"]
    assert all(r["synthetic_generator"] == "local:mv-tiny" for r in synthetic)
