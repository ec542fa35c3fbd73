"""Protos <-> domain for the synth service: a ``SyntheticExamplesTask`` becomes a validated
:class:`~tunewright.synth.synthetic.SynthesisTask` (every bad field reported at once)."""

from __future__ import annotations

from typing import Any

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.params import plugin_params
from tunewright.synth.synthetic import (
    DEFAULT_FILTERS,
    FILTER_PARAMS,
    Decoding,
    FilterStep,
    Review,
    SynthesisTask,
)
from tunewright.synth.v1 import synth_pb2

TASK = "spec.synthetic_examples"
MAX_EXAMPLES = 100_000


def _params(ref: common_pb2.PluginRef, where: str) -> dict[str, Any]:
    return plugin_params(ref, f"{where}.params", reason="INVALID_SYNTH_SPEC")


def synthesis_task(spec: synth_pb2.SynthJobSpec, workspace: str) -> SynthesisTask:
    """Validate ``spec.synthetic_examples``; raises :class:`InvalidArgument` listing every
    bad field."""
    task = spec.synthetic_examples
    bad: list[FieldViolation] = []
    seed = task.seed_dataset
    if not (seed.id or seed.dataset):
        bad.append(FieldViolation(f"{TASK}.seed_dataset", "required: id, or dataset (+ version)"))
    if not 0 < task.num_examples <= MAX_EXAMPLES:
        bad.append(FieldViolation(f"{TASK}.num_examples", f"must be 1..{MAX_EXAMPLES}"))
    share = task.max_synthetic_share or 0.2
    if not 0 < share < 1:
        bad.append(FieldViolation(f"{TASK}.max_synthetic_share", "must be in (0, 1)"))
    review = _review(task, bad)
    if task.seeds_per_prompt < 0 or task.thin_fraction < 0 or task.thin_fraction > 1:
        bad.append(FieldViolation(TASK, "seeds_per_prompt >= 0, thin_fraction in [0, 1]"))
    steps = []
    refs = list(task.filters) or [common_pb2.PluginRef(name=n) for n in DEFAULT_FILTERS]
    for i, ref in enumerate(refs):
        where = f"{TASK}.filters[{i}]"
        if ref.name not in FILTER_PARAMS:
            bad.append(FieldViolation(f"{where}.name", f"one of {', '.join(FILTER_PARAMS)}"))
            continue
        defaults = FILTER_PARAMS[ref.name]
        given = _params(ref, where)
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            bad.append(FieldViolation(f"{where}.params", f"allowed: {', '.join(defaults)}"))
            continue
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in given.values()):
            bad.append(FieldViolation(f"{where}.params", "values must be numbers"))
            continue
        steps.append(FilterStep(ref.name, {**defaults, **given}))
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        bad.append(FieldViolation(f"{TASK}.filters", "each filter at most once"))
    gen = task.generation
    decoding = Decoding(
        max_new_tokens=gen.max_new_tokens or 96,
        temperature=gen.temperature if gen.HasField("temperature") else 0.9,
        top_p=gen.top_p if gen.HasField("top_p") else 0.95,
        seed=gen.seed or spec.seed,
        batch_size=gen.batch_size or 8,
    )
    if decoding.max_new_tokens < 1 or decoding.temperature <= 0 or not 0 < decoding.top_p <= 1:
        bad.append(
            FieldViolation(
                f"{TASK}.generation", "max_new_tokens >= 1, temperature > 0, top_p (0, 1]"
            )
        )
    if bad:
        raise InvalidArgument(
            "invalid synthetic examples task", reason="INVALID_SYNTH_SPEC", field_violations=bad
        )
    return SynthesisTask(
        workspace=workspace,
        seed_dataset=seed,
        generator=task.generator.name or "local",
        generator_params=_params(task.generator, f"{TASK}.generator"),
        model=task.model if task.HasField("model") and _has_ref(task.model) else None,
        num_examples=task.num_examples,
        target_categories=tuple(dict.fromkeys(c for c in task.target_categories if c)),
        max_synthetic_share=share,
        filters=tuple(steps),
        output_dataset=task.output_dataset,
        decoding=decoding,
        category_field=task.category_field or "category",
        seeds_per_prompt=task.seeds_per_prompt or 4,
        thin_fraction=task.thin_fraction or 0.5,
        review=review,
    )


def _review(task: synth_pb2.SyntheticExamplesTask, bad: list[FieldViolation]) -> Review | None:
    """``human_review`` with its backend, dataset and wait; review fields without it are a
    mistake, refused rather than ignored."""
    given = task.HasField("review_backend") or task.review_dataset
    if not task.human_review:
        if given or task.review_timeout_seconds or task.review_poll_interval_seconds:
            bad.append(FieldViolation(f"{TASK}.human_review", "review_* fields need human_review"))
        return None
    if not task.review_backend.name:
        bad.append(
            FieldViolation(
                f"{TASK}.review_backend.name",
                "required with human_review: a feedback backend with reviews (argilla, simulated)",
            )
        )
    if task.review_timeout_seconds < 0 or task.review_poll_interval_seconds < 0:
        bad.append(
            FieldViolation(
                f"{TASK}.review_timeout_seconds",
                "review_timeout_seconds and review_poll_interval_seconds must be >= 0",
            )
        )
    return Review(
        backend=task.review_backend,
        dataset=task.review_dataset,
        timeout_s=float(max(task.review_timeout_seconds, 0)),
        interval_s=float(task.review_poll_interval_seconds or 5),
    )


def _has_ref(ref: common_pb2.ModelVersionRef) -> bool:
    return bool(ref.id or ref.model)
