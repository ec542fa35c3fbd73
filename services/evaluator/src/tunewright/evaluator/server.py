"""The evaluator service process: ``tunewright-evaluator`` or ``python -m tunewright.evaluator.server``.

``SubmitEvaluationRun`` validates the spec, records the run as queued and publishes
``tw.evaluator.run.requested`` (the same path as a request from another system); the
``evaluator-worker`` consumer runs it and publishes ``tw.evaluator.run.completed`` (the run with
its metrics, deltas, verdict and report refs; the registry records it) or ``.failed``. Runs are
kept as JSON files under ``<data_dir>/evaluator/runs`` for Get/List.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import Delivery, event_meta
from tunewright.core.errors import NotFound, TunewrightError
from tunewright.core.ids import new_id, stable_id
from tunewright.core.registry_client import RegistryClient
from tunewright.core.service import Consumer, GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.evaluator.runner import Evaluation, validate
from tunewright.evaluator.settings import EvaluatorSettings
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunewright.events.v1 import events_pb2

SERVICE_NAME = evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"].full_name
PRODUCER = "evaluator"
log = logging.getLogger(__name__)


class RunStore:
    """One JSON file per run (the protobuf JSON form), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        if not run_id.replace("_", "").replace("-", "").isalnum():
            raise NotFound(f"evaluation run {run_id!r} not found")
        return self.root / f"{run_id}.json"

    def put(self, run: evaluator_pb2.EvaluationRun) -> None:
        path = self._path(run.id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json_format.MessageToJson(run, preserving_proto_field_name=True))
        tmp.replace(path)

    def get(self, run_id: str) -> evaluator_pb2.EvaluationRun:
        path = self._path(run_id)
        if not path.exists():
            raise NotFound(f"evaluation run {run_id} not found", reason="EVALUATION_RUN_NOT_FOUND")
        return json_format.Parse(path.read_text(), evaluator_pb2.EvaluationRun())

    def all(self) -> list[evaluator_pb2.EvaluationRun]:
        runs = [
            json_format.Parse(p.read_text(), evaluator_pb2.EvaluationRun())
            for p in self.root.glob("*.json")
        ]
        return sorted(runs, key=lambda r: r.created_at.ToNanoseconds(), reverse=True)


@dataclass(frozen=True)
class _RunView:
    """What ``tw_after_evaluate`` sees of a run (tunewright.core.hookspecs.EvalRunView)."""

    id: str
    model: str


def _status(run: evaluator_pb2.EvaluationRun, status: int, reason: str = "") -> None:
    run.status = status  # type: ignore[assignment]
    transition = run.history.add(status=status, reason=reason)
    transition.at.GetCurrentTime()


class Evaluator(evaluator_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, context: ServiceContext[EvaluatorSettings]) -> None:
        self.context = context
        data = context.settings.data_dir / "evaluator"
        self.store = RunStore(data / "runs")
        self.workdir = data / "work"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lookup = RegistryClient(context.settings.evaluator.registry_address)

    # --- gRPC ---

    async def SubmitEvaluationRun(self, request: Any, context: Any) -> Any:
        spec = request.spec
        validate(spec, self.context.plugins.registries)
        run_id = stable_id("eval", request.request_id) if request.request_id else new_id("eval")
        try:
            return evaluator_pb2.SubmitEvaluationRunResponse(run=self.store.get(run_id))
        except NotFound:
            pass
        run = evaluator_pb2.EvaluationRun(
            id=run_id, workspace=spec.workspace or "default", spec=spec
        )
        run.created_at.GetCurrentTime()
        _status(run, common_pb2.JOB_STATUS_QUEUED)
        self.store.put(run)
        await self.context.bus.publish(
            subjects.EVALUATOR_RUN_REQUESTED,
            events_pb2.EvaluatorRunRequested(
                meta=event_meta(producer=PRODUCER, workspace=run.workspace),
                run_id=run_id,
                spec=spec,
            ),
            key=run_id,
        )
        return evaluator_pb2.SubmitEvaluationRunResponse(run=run)

    async def GetEvaluationRun(self, request: Any, context: Any) -> Any:
        return evaluator_pb2.GetEvaluationRunResponse(run=self.store.get(request.run_id))

    async def ListEvaluationRuns(self, request: Any, context: Any) -> Any:
        runs = [
            r for r in self.store.all()
            if r.workspace == (request.workspace or "default")
            and (not request.candidate_model_version_id or r.spec.candidate.model.id == request.candidate_model_version_id)
        ]  # fmt: skip
        size = request.page.page_size or 50
        return evaluator_pb2.ListEvaluationRunsResponse(runs=runs[:size])

    async def ListMetrics(self, request: Any, context: Any) -> Any:
        return evaluator_pb2.ListMetricsResponse(
            metrics=[
                evaluator_pb2.MetricInfo(
                    name=m.name,
                    description=m.description,
                    higher_is_better=m.higher_is_better,
                    plugin=m.plugin,
                )
                for m in self.context.plugins.registries.metrics
            ]
        )

    # --- the worker ---

    async def on_request(self, delivery: Delivery) -> None:
        request = delivery.decode(events_pb2.EvaluatorRunRequested)
        run_id = request.run_id or delivery.msg_id
        try:
            run = self.store.get(run_id)
        except NotFound:
            run = evaluator_pb2.EvaluationRun(
                id=run_id, workspace=request.spec.workspace or "default", spec=request.spec
            )
            run.created_at.GetCurrentTime()
        if run.status in (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED):
            return  # a redelivery of a finished run
        _status(run, common_pb2.JOB_STATUS_RUNNING)
        self.store.put(run)
        workspace = run.workspace

        async def progress(message: str) -> None:
            event = events_pb2.EvaluatorRunProgressed(
                meta=event_meta(producer=PRODUCER, workspace=workspace), run_id=run_id
            )
            event.event.job_id = run_id
            event.event.message = message[:500]
            event.event.level = common_pb2.EVENT_LEVEL_INFO
            event.event.kind = common_pb2.EVENT_KIND_MESSAGE
            await self.context.bus.publish(
                subjects.EVALUATOR_RUN_PROGRESSED, event, key=f"{run_id}/{new_id('p')}"
            )

        evaluation = Evaluation(
            lookup=self.lookup,
            artifacts=self.context.artifacts,
            plugins=self.context.plugins.registries,
            workdir=self.workdir,
        )
        try:
            outcome = await evaluation.run(run_id, request.spec, progress)
            verdict = outcome.run.verdict
            # lifecycle hook; a plugin that raises a domain error fails the run
            self.context.plugins.after_evaluate(
                run=_RunView(run_id, outcome.run.spec.candidate.model.id),
                result={
                    "passed": verdict.passed,
                    "reasons": list(verdict.reasons),
                    "deltas": {
                        f"{c.metric}/{c.baseline}": c.delta for c in outcome.run.comparisons
                    },
                },
            )
        except TunewrightError as exc:
            _status(run, common_pb2.JOB_STATUS_FAILED, exc.reason)
            run.error.reason, run.error.message = exc.reason, exc.message
            self.store.put(run)
            failed = events_pb2.EvaluatorRunFailed(
                meta=event_meta(producer=PRODUCER, workspace=workspace), run_id=run_id
            )
            failed.error.CopyFrom(run.error)
            await self.context.bus.publish(subjects.EVALUATOR_RUN_FAILED, failed, key=run_id)
            return
        done = outcome.run
        done.created_at.CopyFrom(run.created_at)
        done.history.extend(run.history)
        _status(done, common_pb2.JOB_STATUS_SUCCEEDED)
        self.store.put(done)
        await self.context.bus.publish(
            subjects.EVALUATOR_RUN_COMPLETED,
            events_pb2.EvaluatorRunCompleted(
                meta=event_meta(producer=PRODUCER, workspace=workspace), run=done
            ),
            key=run_id,
        )
        log.info("evaluation done run_id=%s passed=%s", run_id, done.verdict.passed)


def _evaluator(context: ServiceContext[EvaluatorSettings]) -> Evaluator:
    existing = context.resources.get("evaluator")
    if isinstance(existing, Evaluator):
        return existing
    app = Evaluator(context)
    context.resources["evaluator"] = app
    return app


def grpc_bindings(context: ServiceContext[EvaluatorSettings]) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server,
            _evaluator(context),
            SERVICE_NAME,
        )
    ]


def consumers(context: ServiceContext[EvaluatorSettings]) -> list[Consumer]:
    return [Consumer("evaluator-worker", _evaluator(context).on_request)]


DEFINITION = ServiceDefinition(
    name="evaluator", settings_cls=EvaluatorSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
