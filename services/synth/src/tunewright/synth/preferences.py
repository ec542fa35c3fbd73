"""Preference data from a model's own answers: candidates out to a feedback backend, rankings
back in as a preference dataset version.

1. :meth:`Preferences.candidates`: the prompts of a dataset version (chat rows: every turn but
   the last assistant one; its answer is kept as the record's reference), N sampled responses
   per prompt from a registered model version (the ``local`` generator), published to the
   feedback backend as one record per prompt.
2. :meth:`Preferences.collect`: the backend's rankings, one preference pair per ranked record
   (chosen: the response most annotators put first; rejected: the one most put last; ties go
   to the first annotator's ranking; a pair whose texts are equal teaches nothing and is
   skipped), with the annotators kept on every row, written as a JSONL split and described as
   a ``preference`` dataset version whose parent is the prompts' dataset version (with
   ``eval_fraction``, a seeded share of the pairs goes to an ``eval`` split instead, so an
   evaluation can score rankings the trained model never saw). Agreement
   (the share of annotators who picked the chosen response) is averaged over the records at
   least two people ranked, and that number of records is reported with it. Every ranked
   record is either a pair or a drop with a reason (:data:`DROP_REASONS`), so ranked records
   = pairs + drops. With ``wait_timeout_seconds`` it polls a human backend (such as Argilla)
   until ``min_records`` records are ranked, reporting progress and stopping at once when the
   job is cancelled; a simulated backend ranks everything at once and never waits.

Transport-free: the registry and the backends come in as objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, ArtifactStore
from tunewright.core.errors import Cancelled, FailedPrecondition, FieldViolation, InvalidArgument
from tunewright.core.model_versions import fetch_chain
from tunewright.core.params import plugin_params
from tunewright.core.plugins import Registries
from tunewright.core.registry_client import VersionLookup
from tunewright.core.splits import read_split_rows
from tunewright.registry.v1 import registry_pb2
from tunewright.synth.v1 import synth_pb2

Progress = Callable[[str, dict[str, float]], Awaitable[None]]
T = TypeVar("T")

#: why a ranked record gives no preference pair
DROP_REASONS = ("below_min_annotators", "identical_responses", "unknown_record")
#: longest a cancel waits while collection sleeps between polls
_CANCEL_CHECK_S = 1.0


@dataclass(frozen=True)
class Published:
    records: int
    review_url: str
    backend: str
    dataset: str


@dataclass(frozen=True)
class Collected:
    dataset_version: registry_pb2.DatasetVersion
    pairs: int
    annotators: int
    #: mean agreement over the records at least two annotators ranked (0 when none)
    agreement: float
    simulated: bool
    #: records the agreement is averaged over
    agreement_records: int = 0
    #: ranked records that gave no pair, by reason (every reason present, zeros included)
    drops: Mapping[str, int] = field(default_factory=dict)


def _prompt_and_reference(row: Mapping[str, Any]) -> tuple[list[dict[str, str]], str] | None:
    messages = row.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    if (
        isinstance(messages, list)
        and len(messages) >= 2
        and messages[-1].get("role") == "assistant"
    ):
        return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], str(
            messages[-1]["content"]
        )
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}], str(row.get("completion", ""))
    if isinstance(prompt, list):
        return [{"role": m["role"], "content": m["content"]} for m in prompt], ""
    return None


def feedback_backend(
    plugins: Registries,
    ref: common_pb2.PluginRef,
    directory: Path,
    where: str = "spec.feedback_backend",
) -> tuple[str, Any]:
    """The named backend built from its params (``where``: the spec field, for errors)."""
    name = ref.name or "simulated"
    if name not in plugins.feedback_backends:
        raise InvalidArgument(
            f"unknown feedback backend {name!r}",
            field_violations=[
                FieldViolation(
                    f"{where}.name",
                    f"registered: {', '.join(plugins.feedback_backends.names())}",
                )
            ],
        )
    params = plugin_params(ref, f"{where}.params", reason="BAD_FEEDBACK_BACKEND_PARAMS")
    try:
        backend = plugins.feedback_backends.get(name).factory(directory=directory / name, **params)
    except (TypeError, ValueError) as exc:  # backends refuse bad params with these
        raise InvalidArgument(
            f"feedback backend {name!r}: {exc}",
            reason="BAD_FEEDBACK_BACKEND_PARAMS",
            field_violations=[FieldViolation(f"{where}.params", str(exc))],
        ) from None
    return name, backend


async def poll_until(
    poll: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout_s: float,
    interval_s: float,
    cancelled: Callable[[], bool],
    cancel_message: str,
    waiting: Callable[[T], Awaitable[None]] | None = None,
) -> T:
    """Call ``poll`` (in a thread: backends block on HTTP) until ``done`` says so or
    ``timeout_s`` has passed, every ``interval_s``; returns the last result either way.
    ``waiting`` hears each result that is not done yet. ``cancelled`` is checked before every
    poll and at least every second while sleeping; when it says so, :class:`Cancelled`
    (``cancel_message``) is raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        if cancelled():
            raise Cancelled(cancel_message)
        found = await asyncio.to_thread(poll)
        if done(found) or time.monotonic() >= deadline:
            return found
        if waiting is not None:
            await waiting(found)
        wake = min(time.monotonic() + interval_s, deadline)
        # a cancel is a flag in the job store, polled: there is no event to wait on
        while not cancelled() and (left := wake - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, _CANCEL_CHECK_S))


@dataclass
class _Found:
    rows: list[dict[str, Any]]
    annotators: set[str]
    agreements: list[float]  # records with at least two annotators only
    parents: set[str]
    ranked_records: int
    drops: Counter[str]


def split_pairs(
    rows: list[dict[str, Any]], eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``rows`` as (train, eval): ``round(n * eval_fraction)`` pairs drawn by a generator seeded
    with ``seed`` are held out, at least one when the fraction is above 0 and there are two
    pairs, and never all of them (DPO needs a pair to train on). Both keep the rows' order."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0.0 or len(rows) < 2:
        return rows, []
    k = min(max(round(len(rows) * eval_fraction), 1), len(rows) - 1)
    held = set(random.Random(seed).sample(range(len(rows)), k))
    return (
        [r for i, r in enumerate(rows) if i not in held],
        [r for i, r in enumerate(rows) if i in held],
    )


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


def _gather(backend: Any, dataset: str, min_annotators: int) -> _Found:
    """The backend's rankings as preference rows: one per record ranked by at least
    ``min_annotators`` people. Chosen is the response most annotators put first, rejected the
    one most put last (ties: the first annotator's ranking); agreement is the share of
    annotators that picked the chosen one, kept for records two or more people ranked (one
    annotator always agrees with themself). Records that give no pair are counted in
    ``drops`` by reason."""
    rankings = backend.collect(dataset)
    records = {r["record_id"]: r for r in backend.records(dataset)}
    by_record: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ranking in rankings:
        by_record[ranking["record_id"]].append(ranking)
    found = _Found([], set(), [], set(), len(by_record), Counter())
    for record_id, ranked in sorted(by_record.items()):
        record = records.get(record_id)
        if record is None:
            found.drops["unknown_record"] += 1
            continue
        if len(ranked) < min_annotators:
            found.drops["below_min_annotators"] += 1
            continue
        best_votes = Counter(r["ranking"][0] for r in ranked)
        worst_votes = Counter(r["ranking"][-1] for r in ranked)
        first = ranked[0]["ranking"]
        best = max(best_votes, key=lambda i: (best_votes[i], i == first[0]))
        worst = max(
            (i for i in worst_votes if i != best),
            key=lambda i: (worst_votes[i], i == first[-1]),
            default=next((i for i in reversed(first) if i != best), best),
        )
        chosen, rejected = record["responses"][best], record["responses"][worst]
        if chosen.strip() == rejected.strip():
            found.drops["identical_responses"] += 1
            continue
        if len(ranked) >= 2:
            found.agreements.append(best_votes[best] / len(ranked))
        found.annotators.update(r["annotator"] for r in ranked)
        found.parents.add(record.get("prompts_dataset_version_id", ""))
        found.rows.append(
            {
                "prompt": record["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "annotators": sorted({r["annotator"] for r in ranked}),
                "record_id": record_id,
            }
        )
    return found


class Preferences:
    def __init__(
        self,
        *,
        registry: VersionLookup,
        artifacts: ArtifactStore,
        plugins: Registries,
        workdir: Path,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.plugins = plugins
        self.workdir = workdir

    async def candidates(self, job_id: str, spec: synth_pb2.SynthJobSpec) -> Published:
        task = spec.preference_candidates
        workspace = spec.workspace or "default"
        if not task.feedback_dataset:
            raise InvalidArgument(
                "feedback_dataset is required",
                field_violations=[
                    FieldViolation("spec.preference_candidates.feedback_dataset", "required")
                ],
            )
        n = task.responses_per_prompt or 2
        if n < 2:
            raise InvalidArgument(
                "ranking needs at least 2 responses per prompt",
                field_violations=[
                    FieldViolation(
                        "spec.preference_candidates.responses_per_prompt", "must be >= 2"
                    )
                ],
            )
        dataset = await self.registry.dataset_version(task.prompts, workspace)
        split = "train" if "train" in dataset.splits else next(iter(dataset.splits), "")
        if not split:
            raise FailedPrecondition(
                f"dataset version {dataset.id} has no splits", reason="NO_SPLITS"
            )
        ref = dataset.splits[split]
        rows = read_split_rows(
            await self.artifacts.get_bytes(ArtifactRef.from_uri(ref.uri)), ref.media_type
        )
        prompts = [p for p in (_prompt_and_reference(r) for r in rows) if p is not None]
        if task.max_prompts:
            prompts = prompts[: task.max_prompts]
        if not prompts:
            raise FailedPrecondition(f"no prompts in {dataset.id}", reason="NO_PROMPTS")
        model = await self.registry.model_version(task.model, workspace)

        async def by_id(model_version_id: str) -> registry_pb2.ModelVersion:
            return await self.registry.model_version(
                common_pb2.ModelVersionRef(id=model_version_id), workspace
            )

        if "local" not in self.plugins.generators:
            raise FailedPrecondition(
                "no 'local' generator plugin is installed", reason="NO_GENERATOR"
            )
        generator = self.plugins.generators.get("local").factory()
        gen = task.generation
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            chain = await fetch_chain(model, by_id, self.artifacts, Path(tmp))
            responses = await asyncio.to_thread(
                generator.generate,
                **chain.generator_inputs(self.plugins.base_models),
                prompts=[p for p, _ in prompts],
                max_new_tokens=gen.max_new_tokens or 48,
                batch_size=gen.batch_size or 8,
                do_sample=True,
                temperature=gen.temperature if gen.HasField("temperature") else 1.0,
                top_p=gen.top_p if gen.HasField("top_p") else 0.95,
                seed=gen.seed or spec.seed,
                num_return_sequences=n,
            )
        records = [
            {
                "record_id": f"{job_id}-{i}",
                "prompt": prompt,
                "reference": reference,
                "responses": answers,
                "model_version_id": model.id,
                "prompts_dataset_version_id": dataset.id,
            }
            for i, ((prompt, reference), answers) in enumerate(zip(prompts, responses, strict=True))
        ]
        name, backend = feedback_backend(
            self.plugins, task.feedback_backend, self.workdir / "feedback"
        )
        url = await asyncio.to_thread(backend.publish, task.feedback_dataset, records)
        return Published(len(records), str(url), name, task.feedback_dataset)

    async def collect(
        self,
        job_id: str,
        spec: synth_pb2.SynthJobSpec,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Collected:
        """Rankings -> preference dataset version; waits for people when the task says so.

        With ``wait_timeout_seconds`` the backend is polled every ``poll_interval_seconds``
        until ``min_records`` usable rankings (at least one) are there, reporting each change
        through ``progress``; then it fails with NOT_ENOUGH_FEEDBACK / NO_FEEDBACK like a task
        that does not wait. A simulated backend ranks everything at once: it never waits.
        ``cancelled`` is checked before every poll and at least every second while waiting;
        when it says so, :class:`Cancelled` is raised.
        """
        task = spec.feedback_collection
        workspace = spec.workspace or "default"
        if not task.feedback_dataset or not task.output_dataset:
            raise InvalidArgument(
                "feedback_dataset and output_dataset are required",
                field_violations=[
                    FieldViolation(
                        "spec.feedback_collection", "feedback_dataset and output_dataset"
                    )
                ],
            )
        if not 0.0 <= task.eval_fraction < 1.0:
            raise InvalidArgument(
                f"eval_fraction must be in [0, 1), got {task.eval_fraction}",
                field_violations=[
                    FieldViolation("spec.feedback_collection.eval_fraction", "must be in [0, 1)")
                ],
            )
        name, backend = feedback_backend(
            self.plugins, task.feedback_backend, self.workdir / "feedback"
        )
        simulated = bool(getattr(backend, "simulated", False))
        wait_s = 0 if simulated else max(task.wait_timeout_seconds, 0)
        needed = max(task.min_records, 1 if wait_s else 0)
        reported = -1

        async def waiting(found: _Found) -> None:
            nonlocal reported
            if progress is not None and len(found.rows) != reported:
                reported = len(found.rows)
                await progress(
                    f"waiting for rankings in {name}: {reported}/{needed} records ranked",
                    {"step": float(reported), "total_steps": float(needed)},
                )

        found = await poll_until(
            lambda: _gather(backend, task.feedback_dataset, task.min_annotators or 1),
            lambda found: len(found.rows) >= needed,
            timeout_s=wait_s,
            interval_s=task.poll_interval_seconds if task.poll_interval_seconds > 0 else 5,
            cancelled=cancelled,
            cancel_message=f"synth job {job_id} cancelled while waiting for feedback",
            waiting=waiting,
        )
        rows = found.rows
        if task.min_records and len(rows) < task.min_records:
            waited = f" after waiting {wait_s} s" if wait_s else ""
            raise FailedPrecondition(
                f"{len(rows)} usable rankings{waited}, fewer than min_records {task.min_records}",
                reason="NOT_ENOUGH_FEEDBACK",
            )
        if not rows:
            waited = f" after waiting {wait_s} s" if wait_s else " yet"
            raise FailedPrecondition(f"no usable rankings{waited}", reason="NO_FEEDBACK")
        train_rows, eval_rows = split_pairs(rows, task.eval_fraction, task.eval_seed)
        bodies = {"train": _jsonl(train_rows)}
        if eval_rows:
            bodies["eval"] = _jsonl(eval_rows)
        # one split hashes as its body alone (as before there was an eval split)
        hashed = hashlib.sha256(bodies["train"])
        if eval_rows:
            hashed.update(b"\0eval\0" + bodies["eval"])
        digest = hashed.hexdigest()
        version = registry_pb2.DatasetVersion(
            id=f"dsv-{hashlib.sha256(f'{workspace}/{task.output_dataset}/{digest}'.encode()).hexdigest()[:24]}",
            workspace=workspace,
            dataset=task.output_dataset,
            content_hash=digest,
            kind=common_pb2.DATASET_KIND_PREFERENCE,
            source=registry_pb2.DATASET_SOURCE_FEEDBACK,
            produced_by=job_id,
            parent_version_ids=sorted(p for p in found.parents if p),
            counts=registry_pb2.RowCounts(
                total=found.ranked_records,
                accepted=len(rows),
                filtered=sum(found.drops.values()),
                train=len(train_rows),
                eval=len(eval_rows),
            ),
            labels={
                "feedback_backend": name,
                "simulated": str(simulated).lower(),
                "agreement_records": str(len(found.agreements)),
                # which rule ranked (e.g. simulated:rubric); people's names stay off labels
                **({"annotator": ",".join(sorted(found.annotators))} if simulated else {}),
            },
        )
        for split, body in bodies.items():
            ref = await self.artifacts.put_bytes(body, "application/jsonl")
            version.splits[split].CopyFrom(
                common_pb2.ArtifactRef(
                    uri=ref.uri,
                    sha256=ref.sha256,
                    size_bytes=ref.size_bytes or 0,
                    media_type=ref.media_type,
                )
            )
        return Collected(
            dataset_version=version,
            pairs=len(rows),
            annotators=len(found.annotators),
            agreement=sum(found.agreements) / len(found.agreements) if found.agreements else 0.0,
            simulated=simulated,
            agreement_records=len(found.agreements),
            drops={reason: found.drops[reason] for reason in DROP_REASONS},
        )
