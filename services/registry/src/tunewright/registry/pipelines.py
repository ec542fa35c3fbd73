"""Pipeline runs: a persisted state machine advanced by facts.

A pipeline is a YAML list of stages run in order::

    name: support-tickets
    stages:
      - name: curate
        kind: ingest                     # ingest | synth | candidates | feedback | train |
        spec: {dataset: tickets, ...}    # evaluate | approve | promote
      - name: sft
        kind: train
        spec:
          method: sft
          base_model: tiny:llama-xs
          datasets: [{id: "${stages.curate.dataset_version_id}"}]
      - name: gate
        kind: promote
        alias: production
        model: "${stages.sft.model_version_id}"

``spec`` is the JSON form of the stage kind's request message (IngestSpec, SynthJobSpec,
TrainingJobSpec, EvaluationSpec); strings may refer to earlier stages' outputs
(``${stages.<name>.<output>}``), to submit-time parameters (``${params.<name>}``) and to the run
(``${run.id}``). A top-level ``parameters:`` mapping gives parameters string defaults; values
given at submit win. Starting a stage writes, in one transaction, the stage's new state and the
request event for the owning service into the outbox, under a job id derived from the run and
stage, so a registry killed at any point re-sends the same request (deduplicated by NATS) and
continues from the database after restart. A ``promote`` stage runs inside the registry.

An ``approve`` stage is a human gate: it waits (status running) until someone decides it with
:func:`approve_stage` (the ``ApprovePipelineStage`` RPC); approval lets the run go on, a
rejection fails the stage and the run with reason ``APPROVAL_REJECTED``. Both are audited.

Every stage may set ``deadline_seconds`` (a whole number; 0 = none): a stage still running
that long after it started fails, and with it the run, with reason ``STAGE_DEADLINE_EXCEEDED``,
and its service is asked to cancel the job (:func:`expire_overdue_stages`, which the registry
runs periodically). Without it a stage gets the registry's ``stage_deadline_s`` setting, and an
``approve`` stage none (people take their time). This is what ends a run whose service is gone
or whose final fact never came, instead of leaving it running forever.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import event_meta
from tunewright.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from tunewright.core.ids import stable_id
from tunewright.evaluator.v1 import evaluator_pb2
from tunewright.events.v1 import events_pb2
from tunewright.ingest.v1 import ingest_pb2
from tunewright.registry import convert, models, promotion
from tunewright.registry.outbox import enqueue
from tunewright.registry.records import PRODUCER, ensure_workspace
from tunewright.synth.v1 import synth_pb2
from tunewright.trainer.v1 import trainer_pb2

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DEADLINE_KEY = "deadline_seconds"
REF_RE = re.compile(r"\$\{([a-z]+)\.([A-Za-z0-9_.-]+)\}")
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class StageKind:
    """How a stage kind asks its service for work and what it produces."""

    outputs: tuple[str, ...]
    spec_type: type[Message] | None = None
    subject: str = ""
    # builds the request event: (meta, job_id, spec) -> message
    request: Callable[[common_pb2.EventMeta, str, Any], Message] | None = None
    control_subject: str = ""
    # builds the cancel request for a running job: (meta, job_id, reason) -> message
    cancel: Callable[[common_pb2.EventMeta, str, str], Message] | None = None


_CANCEL = events_pb2.CONTROL_ACTION_CANCEL


def _ingest_cancel(m: common_pb2.EventMeta, j: str, r: str) -> Message:
    return events_pb2.IngestControlRequested(meta=m, job_id=j, action=_CANCEL, reason=r)


def _synth_cancel(m: common_pb2.EventMeta, j: str, r: str) -> Message:
    return events_pb2.SynthControlRequested(meta=m, job_id=j, action=_CANCEL, reason=r)


KINDS: dict[str, StageKind] = {
    "ingest": StageKind(
        ("dataset_version_id",),
        ingest_pb2.IngestSpec,
        subjects.INGEST_DATASET_REQUESTED,
        lambda m, j, s: events_pb2.IngestDatasetRequested(meta=m, job_id=j, spec=s),
        subjects.INGEST_CONTROL_REQUESTED,
        _ingest_cancel,
    ),
    "synth": StageKind(
        ("dataset_version_id",),
        synth_pb2.SynthJobSpec,
        subjects.SYNTH_DATASET_REQUESTED,
        lambda m, j, s: events_pb2.SynthDatasetRequested(meta=m, job_id=j, spec=s),
        subjects.SYNTH_CONTROL_REQUESTED,
        _synth_cancel,
    ),
    "candidates": StageKind(
        ("feedback_dataset",),
        synth_pb2.SynthJobSpec,
        subjects.SYNTH_CANDIDATES_REQUESTED,
        lambda m, j, s: events_pb2.SynthCandidatesRequested(meta=m, job_id=j, spec=s),
        subjects.SYNTH_CONTROL_REQUESTED,
        _synth_cancel,
    ),
    "feedback": StageKind(
        ("dataset_version_id",),
        synth_pb2.SynthJobSpec,
        subjects.FEEDBACK_COLLECTION_REQUESTED,
        lambda m, j, s: events_pb2.FeedbackCollectionRequested(meta=m, job_id=j, spec=s),
        subjects.SYNTH_CONTROL_REQUESTED,
        _synth_cancel,
    ),
    "train": StageKind(
        ("model_version_id",),
        trainer_pb2.TrainingJobSpec,
        subjects.TRAINER_JOB_REQUESTED,
        lambda m, j, s: events_pb2.TrainerJobRequested(meta=m, job_id=j, spec=s),
        subjects.TRAINER_CONTROL_REQUESTED,
        lambda m, j, r: events_pb2.TrainerControlRequested(
            meta=m, job_id=j, action=_CANCEL, reason=r
        ),
    ),
    "evaluate": StageKind(
        ("evaluation_id", "passed"),
        evaluator_pb2.EvaluationSpec,
        subjects.EVALUATOR_RUN_REQUESTED,
        lambda m, j, s: events_pb2.EvaluatorRunRequested(meta=m, run_id=j, spec=s),
        subjects.EVALUATOR_CONTROL_REQUESTED,
        lambda m, j, r: events_pb2.EvaluatorControlRequested(
            meta=m, run_id=j, action=_CANCEL, reason=r
        ),
    ),
    "promote": StageKind(("model_version_id", "alias")),
    # a human decision, recorded by approve_stage(); nothing is requested from a service
    "approve": StageKind(("approved_by",)),
}

# --- the spec ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str
    config: dict[str, Any]  # spec (or alias/model for promote), placeholders unresolved


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    workspace: str
    stages: tuple[StageSpec, ...]
    parameters: dict[str, str]  # the spec's defaults overridden by the submitted values


#: a pipeline spec is a page of YAML: bound what one submission may cost to parse
MAX_SPEC_BYTES = 1 << 20
#: nodes after expanding aliases: anchors are welcome (a shared peft block), a "billion laughs"
#: document (aliases of aliases, 10^9 nodes from a few hundred bytes) is not
MAX_SPEC_NODES = 100_000


def _too_large(spec_yaml: str) -> str:
    """Why the spec is too large to load, or "" (checked on the node graph, before building
    Python objects, so an alias bomb costs its own size, not its expansion)."""
    if len(spec_yaml.encode()) > MAX_SPEC_BYTES:
        return f"larger than {MAX_SPEC_BYTES} bytes"
    root = yaml.compose(spec_yaml, Loader=yaml.SafeLoader)
    sizes: dict[int, int] = {}

    def expanded(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:
                raise ValueError("a recursive alias")
            return sizes[key]
        sizes[key] = -1  # in progress: an alias back to here is a cycle
        size = 1
        if isinstance(node, yaml.MappingNode):
            size += sum(expanded(k) + expanded(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(expanded(item) for item in node.value)
        sizes[key] = min(size, MAX_SPEC_NODES + 1)  # capped: sums stay small integers
        return sizes[key]

    try:
        if root is not None and expanded(root) > MAX_SPEC_NODES:
            return f"more than {MAX_SPEC_NODES} nodes once its aliases are expanded"
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return ""


#: what PyYAML's safe constructors raise, besides YAMLError, for a scalar that matches a type but
#: is not one: ``2001-02-30`` (ValueError), ``!!int x``, ``!!timestamp x`` (AttributeError),
#: ``!!bool x`` (KeyError), ``!!int`` with no value (IndexError)
_CONSTRUCTION_ERRORS = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)


def parse_spec(spec_yaml: str, parameters: dict[str, str]) -> PipelineSpec:
    """Validate a pipeline YAML; every problem is a field violation (``stages[1].spec.method``)."""
    try:
        too_large = _too_large(spec_yaml)
        if too_large:
            raise InvalidArgument(
                f"pipeline spec is too large: {too_large}",
                reason="PIPELINE_SPEC_TOO_LARGE",
                field_violations=[FieldViolation("spec_yaml", too_large)],
            )
        data = yaml.safe_load(spec_yaml)
    except RecursionError:
        raise InvalidArgument(
            "pipeline spec is nested too deeply",
            reason="PIPELINE_SPEC_TOO_LARGE",
            field_violations=[FieldViolation("spec_yaml", "nested too deeply")],
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidArgument(
            f"pipeline spec is not valid YAML{where}",
            reason="PIPELINE_SPEC_INVALID",
            field_violations=[FieldViolation("spec_yaml", f"YAML error{where}")],
        ) from None
    except _CONSTRUCTION_ERRORS as exc:
        raise InvalidArgument(
            f"pipeline spec is not valid YAML: a value cannot be read as its type ({exc})",
            reason="PIPELINE_SPEC_INVALID",
            field_violations=[FieldViolation("spec_yaml", "a value cannot be read as its type")],
        ) from None
    bad: list[FieldViolation] = []
    if not isinstance(data, dict):
        raise InvalidArgument(
            "pipeline spec must be a mapping with name and stages",
            reason="PIPELINE_SPEC_INVALID",
            field_violations=[FieldViolation("spec_yaml", "must be a mapping")],
        )
    # keys may be any YAML scalar (1, null, a date): sorted and named as strings
    unknown = set(data) - {"name", "workspace", "stages", "description", "parameters"}
    for key in sorted(unknown, key=str):
        bad.append(
            FieldViolation(
                str(key), "unknown key (allowed: name, workspace, description, parameters, stages)"
            )
        )
    defaults = data.get("parameters") or {}
    if not isinstance(defaults, dict):
        bad.append(FieldViolation("parameters", "must be a mapping of names to default values"))
        defaults = {}
    for key, value in defaults.items():
        if not isinstance(key, str) or not NAME_RE.match(key):
            bad.append(FieldViolation("parameters", f"name {key!r} must match {NAME_RE.pattern}"))
        elif not isinstance(value, str | int | float | bool):
            bad.append(FieldViolation(f"parameters.{key}", "default must be a string or number"))
    parameters = {str(k): str(v) for k, v in defaults.items()} | dict(parameters)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        bad.append(FieldViolation("name", f"required, must match {NAME_RE.pattern}"))
    workspace = data.get("workspace", "default")
    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        bad.append(FieldViolation("stages", "required: a non-empty list"))
        stages_data = []
    stages: list[StageSpec] = []
    outputs: dict[str, tuple[str, ...]] = {}
    for i, raw in enumerate(stages_data):
        where = f"stages[{i}]"
        if not isinstance(raw, dict):
            bad.append(FieldViolation(where, "must be a mapping"))
            continue
        stage_name, kind = raw.get("name"), raw.get("kind")
        if not isinstance(stage_name, str) or not NAME_RE.match(stage_name):
            bad.append(FieldViolation(f"{where}.name", f"required, must match {NAME_RE.pattern}"))
            continue
        if stage_name in outputs:
            bad.append(FieldViolation(f"{where}.name", f"duplicate stage name {stage_name!r}"))
        if not isinstance(kind, str) or kind not in KINDS:  # kind: [] is unhashable
            bad.append(FieldViolation(f"{where}.kind", f"must be one of {', '.join(KINDS)}"))
            continue
        allowed = {
            "promote": {"name", "kind", "alias", "model"},
            "approve": {"name", "kind", "message"},
        }.get(kind, {"name", "kind", "spec"}) | {DEADLINE_KEY}
        for key in sorted(set(raw) - allowed, key=str):
            bad.append(FieldViolation(f"{where}.{key}", f"unknown key for a {kind} stage"))
        config = {k: v for k, v in raw.items() if k not in ("name", "kind")}
        deadline = raw.get(DEADLINE_KEY, 0)
        if isinstance(deadline, bool) or not isinstance(deadline, int) or deadline < 0:
            bad.append(
                FieldViolation(
                    f"{where}.{DEADLINE_KEY}", "must be a whole number of seconds >= 0 (0: none)"
                )
            )
        bad += _check_refs(config, f"{where}", outputs, parameters)
        if kind == "promote":
            if not isinstance(raw.get("alias"), str) or not re.match(
                promotion.ALIAS_PATTERN, raw.get("alias", "")
            ):
                bad.append(FieldViolation(f"{where}.alias", "required, e.g. production"))
        elif kind == "approve":
            if not isinstance(raw.get("message", ""), str):
                bad.append(FieldViolation(f"{where}.message", "must be a string"))
        else:
            bad += _check_message(config.get("spec", {}), KINDS[kind], f"{where}.spec")
        outputs[stage_name] = KINDS[kind].outputs
        stages.append(StageSpec(stage_name, kind, config))
    if bad:
        raise InvalidArgument(
            f"pipeline spec has {len(bad)} problem(s): "
            + "; ".join(f"{v.field}: {v.description}" for v in bad[:5]),
            reason="PIPELINE_SPEC_INVALID",
            field_violations=bad,
        )
    return PipelineSpec(
        name=name, workspace=str(workspace), stages=tuple(stages), parameters=parameters
    )


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]")]
    return []


def _check_refs(
    config: dict[str, Any], where: str, outputs: dict[str, tuple[str, ...]], params: dict[str, str]
) -> list[FieldViolation]:
    bad = []
    for path, text in _strings(config, where):
        for scope, ref in REF_RE.findall(text):
            if scope == "params" and ref not in params:
                bad.append(FieldViolation(path, f"parameter {ref!r} was not given"))
            elif scope == "stages":
                stage, _, key = ref.partition(".")
                if stage not in outputs:
                    bad.append(FieldViolation(path, f"no earlier stage named {stage!r}"))
                elif key not in outputs[stage]:
                    bad.append(
                        FieldViolation(path, f"stage {stage!r} outputs {', '.join(outputs[stage])}")
                    )
            elif scope == "run" and ref != "id":
                bad.append(FieldViolation(path, "only ${run.id} is defined"))
            elif scope not in ("params", "stages", "run"):
                bad.append(FieldViolation(path, f"unknown reference scope {scope!r}"))
    return bad


def _check_message(spec: Any, kind: StageKind, where: str) -> list[FieldViolation]:
    if not isinstance(spec, dict):
        return [FieldViolation(where, "must be a mapping")]
    assert kind.spec_type is not None
    try:
        json_format.ParseDict(spec, kind.spec_type())
    except json_format.ParseError as exc:
        return [FieldViolation(where, str(exc))]
    return []


def _resolve(value: Any, run: models.PipelineRun) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, run) for v in value]
    if not isinstance(value, str):
        return value
    outputs = {s.name: s.outputs for s in run.stages}

    def lookup(match: re.Match[str]) -> str:
        scope, ref = match.group(1), match.group(2)
        if scope == "params":
            return str(run.parameters[ref])
        if scope == "run":
            return run.id
        stage, _, key = ref.partition(".")
        return str(outputs[stage][key])

    return REF_RE.sub(lookup, value)


# --- runs ----------------------------------------------------------------------------------


def create_run(
    session: Session,
    *,
    run_id: str,
    spec_yaml: str,
    parameters: dict[str, str],
    requested_by: str = "",
    trigger_event_id: str = "",
    workspace: str = "",
) -> tuple[models.PipelineRun, bool]:
    """The run ``run_id`` in state queued; an existing one is returned unchanged."""
    existing = session.get(models.PipelineRun, run_id)
    if existing is not None:
        return existing, False
    spec = parse_spec(spec_yaml, parameters)
    workspace = ensure_workspace(session, workspace or spec.workspace).name
    run = models.PipelineRun(
        id=run_id,
        workspace=workspace,
        name=spec.name,
        spec_yaml=spec_yaml,
        parameters=spec.parameters,
        status="queued",
        requested_by=requested_by,
        trigger_event_id=trigger_event_id,
    )
    run.stages = [
        models.PipelineStage(
            run_id=run_id,
            position=i,
            name=s.name,
            kind=s.kind,
            status="queued",
            job_id=stable_id(s.kind, run_id, s.name),
            config=s.config,
            outputs={},
        )
        for i, s in enumerate(spec.stages)
    ]
    session.add(run)
    session.flush()
    _event(session, run, "", "queued", f"pipeline {spec.name} queued ({len(spec.stages)} stages)")
    return run, True


def reject_run(
    session: Session,
    *,
    run_id: str,
    spec_yaml: str,
    error: InvalidArgument,
    workspace: str,
    requested_by: str,
    trigger_event_id: str = "",
) -> models.PipelineRun:
    """Record a pipeline request (from an outside system) whose spec is invalid, as failed; it
    keeps its trigger so a failed retraining request stays linked to its drift detection."""
    existing = session.get(models.PipelineRun, run_id)
    if existing is not None:
        return existing
    ensure_workspace(session, workspace)
    run = models.PipelineRun(
        id=run_id,
        workspace=workspace or "default",
        name="invalid",
        spec_yaml=spec_yaml,
        parameters={},
        status="queued",
        requested_by=requested_by,
        trigger_event_id=trigger_event_id,
    )
    session.add(run)
    session.flush()
    _finish(session, run, "failed", _error(error))
    return run


def get_run(session: Session, run_id: str) -> models.PipelineRun:
    run = session.get(models.PipelineRun, run_id)
    if run is None:
        raise NotFound(f"pipeline run {run_id} not found", reason="PIPELINE_RUN_NOT_FOUND")
    return run


def advance(session: Session, run: models.PipelineRun) -> None:
    """Start the next stage, or finish the run. Idempotent: safe to call on any fact."""
    while run.status not in TERMINAL:
        if run.status == "queued":
            run.status = "running"
            _announce_started(session, run)
        stage = next((s for s in run.stages if s.status != "succeeded"), None)
        if stage is None:
            model = next(
                (
                    s.outputs["model_version_id"]
                    for s in reversed(run.stages)
                    if s.outputs.get("model_version_id")
                ),
                "",
            )
            run.model_version_id = model
            _finish(session, run, "succeeded", None)
            return
        if stage.status in ("failed", "cancelled"):
            _finish(session, run, stage.status, stage.error, failed_stage=stage.name)
            return
        if stage.status == "running":
            return  # waiting for the owning service's fact
        _start_stage(session, run, stage)


def _start_stage(session: Session, run: models.PipelineRun, stage: models.PipelineStage) -> None:
    stage.status = "running"
    stage.started_at = datetime.now(UTC)
    kind = KINDS[stage.kind]
    if stage.kind == "promote":
        _event(session, run, stage.name, "running", "promotion started")
        _promote(session, run, stage)
        return
    if stage.kind == "approve":
        note = _resolve(stage.config.get("message", ""), run)
        _stage_changed(
            session,
            run,
            stage,
            "waiting for approval (ApprovePipelineStage)" + (f": {note}" if note else ""),
        )
        return  # stays running until approve_stage() decides it
    assert kind.spec_type is not None and kind.request is not None
    spec = json_format.ParseDict(_resolve(stage.config.get("spec", {}), run), kind.spec_type())
    if hasattr(spec, "workspace") and not spec.workspace:
        spec.workspace = run.workspace
    meta = event_meta(producer=PRODUCER, workspace=run.workspace, correlation_id=run.id)
    enqueue(
        session,
        kind.subject,
        kind.request(meta, stage.job_id, spec),
        key=stage.job_id,
        workspace=run.workspace,
        correlation_id=run.id,
    )
    _stage_changed(session, run, stage, f"{stage.kind} job {stage.job_id} requested")


def _promote(session: Session, run: models.PipelineRun, stage: models.PipelineStage) -> None:
    config = _resolve(stage.config, run)
    model = config.get("model") or next(
        (
            s.outputs["model_version_id"]
            for s in reversed(run.stages)
            if s.outputs.get("model_version_id")
        ),
        "",
    )
    try:
        if not model:
            raise InvalidArgument("no model to promote: no earlier stage produced one")
        result = promotion.promote(
            session,
            workspace=run.workspace,
            model_version_id=model,
            alias=config["alias"],
            actor=f"pipeline:{run.id}",
        )
    except (FailedPrecondition, InvalidArgument, NotFound) as exc:
        _complete_stage(session, run, stage, "failed", {}, _error(exc))
        return
    outputs = {"model_version_id": model, "alias": config["alias"]}
    if result.evaluation_id:
        outputs["evaluation_id"] = result.evaluation_id
    _complete_stage(session, run, stage, "succeeded", outputs, None)


def _complete_stage(
    session: Session,
    run: models.PipelineRun,
    stage: models.PipelineStage,
    status: str,
    outputs: dict[str, Any],
    error: dict[str, Any] | None,
) -> None:
    stage.status = status
    stage.outputs = {**stage.outputs, **outputs}
    stage.error = error
    stage.finished_at = datetime.now(UTC)
    message = f"{stage.kind} {status}"
    if error:
        message += f": {error.get('message', '')}"
    _stage_changed(session, run, stage, message)


def on_job_outcome(
    session: Session,
    job_id: str,
    status: str,
    outputs: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> models.PipelineRun | None:
    """A service reported the end of job ``job_id``; advance the pipeline that asked for it."""
    stage = session.scalar(
        select(models.PipelineStage).where(models.PipelineStage.job_id == job_id)
    )
    if stage is None:
        return None  # not a pipeline's job
    run = session.get(models.PipelineRun, stage.run_id)
    assert run is not None
    if stage.status != "running" or run.status in TERMINAL:
        return run  # a late or repeated outcome changes nothing
    _complete_stage(session, run, stage, status, outputs or {}, error)
    advance(session, run)
    return run


def approve_stage(
    session: Session, *, run_id: str, stage_name: str, approved: bool, actor: str, comment: str
) -> models.PipelineRun:
    """Decide the waiting ``approve`` stage ``stage_name`` of run ``run_id``, then advance."""
    if not actor.strip():
        raise InvalidArgument(
            "an approval needs the actor who decided (it is audited)",
            field_violations=[FieldViolation("actor", "required")],
        )
    run = get_run(session, run_id)
    stage = next((s for s in run.stages if s.name == stage_name), None)
    if stage is None or stage.kind != "approve":
        approvals = [s.name for s in run.stages if s.kind == "approve"]
        raise NotFound(
            f"pipeline run {run_id} has no approve stage {stage_name!r} "
            f"(approve stages: {', '.join(approvals) or 'none'})",
            reason="APPROVAL_STAGE_NOT_FOUND",
        )
    if stage.status != "running" or run.status in TERMINAL:
        raise FailedPrecondition(
            f"stage {stage_name!r} of run {run_id} is {stage.status}, not waiting for approval",
            reason="NOT_AWAITING_APPROVAL",
        )
    promotion.audit(
        session,
        workspace=run.workspace,
        actor=actor,
        action="approve_stage" if approved else "reject_stage",
        subject_kind="pipeline_run",
        subject_id=run.id,
        reason=comment,
        details={"stage": stage.name},
    )
    if approved:
        _complete_stage(session, run, stage, "succeeded", {"approved_by": actor}, None)
    else:
        detail = common_pb2.ErrorDetail(
            reason="APPROVAL_REJECTED",
            message=f"rejected by {actor}" + (f": {comment}" if comment else ""),
        )
        _complete_stage(session, run, stage, "failed", {}, convert.to_json(detail))
    advance(session, run)
    return run


def on_job_message(session: Session, job_id: str, message: str) -> None:
    stage = session.scalar(
        select(models.PipelineStage).where(models.PipelineStage.job_id == job_id)
    )
    if stage is not None:
        run = session.get(models.PipelineRun, stage.run_id)
        if run is not None and run.status not in TERMINAL:
            _event(session, run, stage.name, stage.status, message)


def cancel_run(session: Session, run_id: str, reason: str) -> models.PipelineRun:
    run = get_run(session, run_id)
    if run.status in TERMINAL:
        return run
    for stage in run.stages:
        if stage.status == "running":
            _ask_to_cancel(session, run, stage, reason)
            _complete_stage(session, run, stage, "cancelled", {}, None)
    _finish(session, run, "cancelled", {"reason": "CANCELLED", "message": reason or "cancelled"})
    return run


def _ask_to_cancel(
    session: Session, run: models.PipelineRun, stage: models.PipelineStage, reason: str
) -> None:
    """Ask the service running the stage's job to stop it (nothing for in-registry stages)."""
    kind = KINDS[stage.kind]
    if kind.cancel is None:
        return
    meta = event_meta(producer=PRODUCER, workspace=run.workspace, correlation_id=run.id)
    enqueue(
        session,
        kind.control_subject,
        kind.cancel(meta, stage.job_id, reason),
        key=f"cancel-{stage.job_id}",
        workspace=run.workspace,
    )


# --- deadlines -----------------------------------------------------------------------------


def stage_deadline_s(stage: models.PipelineStage, default_s: float) -> float | None:
    """Seconds the stage may run: its ``deadline_seconds``, else ``default_s`` (none for an
    approve stage); None when it has no deadline."""
    own = stage.config.get(DEADLINE_KEY)
    if own is not None:
        return float(own) or None
    if stage.kind == "approve":
        return None
    return default_s or None


def expire_overdue_stages(
    session: Session, *, now: datetime, default_deadline_s: float
) -> list[models.PipelineRun]:
    """Fail every running stage past its deadline, and its run; returns the runs failed.

    The stage's service is asked to cancel the job, and a fact that still comes for it later
    changes nothing (the stage is no longer running).
    """
    failed = []
    running = session.scalars(
        select(models.PipelineStage)
        .where(models.PipelineStage.status == "running")
        .order_by(models.PipelineStage.run_id, models.PipelineStage.position)
    )
    for stage in list(running):
        deadline = stage_deadline_s(stage, default_deadline_s)
        if deadline is None or stage.started_at is None:
            continue
        started = stage.started_at
        if started.tzinfo is None:  # SQLite hands back naive datetimes (stored as UTC)
            started = started.replace(tzinfo=UTC)
        if (now - started).total_seconds() < deadline:
            continue
        run = session.get(models.PipelineRun, stage.run_id)
        if run is None or run.status in TERMINAL:
            continue
        message = (
            f"stage {stage.name} ({stage.kind}, job {stage.job_id}) did not end within "
            f"{deadline:g} s of starting: its service may be down, or its final fact was lost"
        )
        _ask_to_cancel(session, run, stage, f"pipeline stage deadline exceeded: {message}")
        detail = common_pb2.ErrorDetail(reason="STAGE_DEADLINE_EXCEEDED", message=message)
        _complete_stage(session, run, stage, "failed", {}, convert.to_json(detail))
        advance(session, run)
        failed.append(run)
    return failed


# --- events --------------------------------------------------------------------------------


def _error(exc: InvalidArgument | FailedPrecondition | NotFound) -> dict[str, Any]:
    detail = common_pb2.ErrorDetail(
        reason=exc.reason,
        message=exc.message,
        field_violations=[
            common_pb2.FieldViolation(field=v.field, description=v.description)
            for v in exc.field_violations
        ],
    )
    return convert.to_json(detail)


def _event(
    session: Session,
    run: models.PipelineRun,
    stage: str,
    status: str,
    message: str,
    level: str = "info",
) -> None:
    sequence = session.scalar(
        select(func.coalesce(func.max(models.PipelineEvent.sequence), 0)).where(
            models.PipelineEvent.run_id == run.id
        )
    )
    session.add(
        models.PipelineEvent(
            run_id=run.id,
            sequence=int(sequence or 0) + 1,
            stage=stage,
            status=status,
            message=message,
            level=level,
        )
    )
    session.flush()


def _stage_changed(
    session: Session, run: models.PipelineRun, stage: models.PipelineStage, message: str
) -> None:
    level = "error" if stage.status == "failed" else "info"
    _event(session, run, stage.name, stage.status, message, level)
    enqueue(
        session,
        subjects.PIPELINE_STAGE_CHANGED,
        events_pb2.PipelineStageChanged(
            meta=event_meta(producer=PRODUCER, workspace=run.workspace, correlation_id=run.id),
            run_id=run.id,
            stage=convert.stage_pb(stage),
        ),
        key=f"{run.id}/{stage.name}/{stage.status}",
        workspace=run.workspace,
        correlation_id=run.id,
    )


def _announce_started(session: Session, run: models.PipelineRun) -> None:
    _event(session, run, "", "running", "pipeline started")
    enqueue(
        session,
        subjects.PIPELINE_RUN_STARTED,
        events_pb2.PipelineRunStarted(
            meta=event_meta(producer=PRODUCER, workspace=run.workspace, correlation_id=run.id),
            run_id=run.id,
            name=run.name,
            stages=[s.name for s in run.stages],
        ),
        key=run.id,
        workspace=run.workspace,
        correlation_id=run.id,
    )


def _finish(
    session: Session,
    run: models.PipelineRun,
    status: str,
    error: dict[str, Any] | None,
    failed_stage: str = "",
) -> None:
    run.status = status
    run.error = error
    run.finished_at = datetime.now(UTC)
    message = f"pipeline {status}"
    if failed_stage:
        message += f" at stage {failed_stage}"
    if error:
        message += f": {error.get('message', '')}"
    _event(session, run, failed_stage, status, message, "error" if status == "failed" else "info")
    enqueue(
        session,
        subjects.PIPELINE_RUN_COMPLETED,
        events_pb2.PipelineRunCompleted(
            meta=event_meta(producer=PRODUCER, workspace=run.workspace, correlation_id=run.id),
            run=convert.pipeline_run_pb(run),
        ),
        key=run.id,
        workspace=run.workspace,
        correlation_id=run.id,
    )
