"""The evaluator service process: ``tunewright-evaluator`` or ``python -m tunewright.evaluator.server``.

``SubmitEvaluationRun`` validates the spec, records the run as queued and publishes
``tw.evaluator.run.requested`` (the same path as a request from another system); the
``evaluator-worker`` consumer runs it and publishes ``tw.evaluator.run.completed`` (the run with
its metrics, deltas, verdict and report refs; the registry records it) or ``.failed``. That
final fact is published before the run is stored as ended, retried until NATS takes it: a run
stored as ended has announced it (a NATS blip at the end cannot leave a pipeline waiting for a
fact never sent), and a run interrupted before that is still running, so its redelivered
request runs it again (the fact's deterministic message id drops a repeat).

``CancelEvaluationRun`` cancels a queued run on the spot and asks a running one to stop with a
``tw.evaluator.control.requested`` that every evaluator process reads (a background listener);
the run stops at its next step (between models and metrics) and ends ``cancelled``, published
as ``tw.evaluator.run.failed`` with reason ``CANCELLED`` so a pipeline waiting on it moves on.
``StreamEvaluationRunEvents`` follows a run's status changes and progress messages until it
ends. Runs and their events are kept as files under ``<data_dir>/evaluator/runs`` for
Get/List/Stream.

The control listener reads the control requests of the last ``evaluator.control_window_s``
seconds when it starts, so a cancel published while this process restarted still stops the
run when its request is redelivered; requests for runs that ended, or older than the window,
are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from nats.js import api as js_api

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import open_private, private_dir, write_private
from tunewright.core.bus import Delivery, event_meta, publish_until_acked
from tunewright.core.errors import FailedPrecondition, NotFound, TunewrightError
from tunewright.core.ids import new_id, stable_id
from tunewright.core.logs import format_exception_redacted
from tunewright.core.registry_client import RegistryClient
from tunewright.core.service import Consumer, GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.evaluator.runner import Evaluation, RunCancelled, validate
from tunewright.evaluator.settings import EvaluatorSettings
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunewright.events.v1 import events_pb2

SERVICE_NAME = evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"].full_name
PRODUCER = "evaluator"
CANCELLED = "CANCELLED"
TERMINAL = (
    common_pb2.JOB_STATUS_SUCCEEDED,
    common_pb2.JOB_STATUS_FAILED,
    common_pb2.JOB_STATUS_CANCELLED,
)
#: a stream re-checks its run's status this often even when no event wakes it
_STREAM_IDLE_S = 1.0
log = logging.getLogger(__name__)


class RunStore:
    """One JSON file per run (the protobuf JSON form), written atomically; owner-only."""

    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)
        self._last_sequence: dict[str, int] = {}

    def _path(self, run_id: str) -> Path:
        if len(run_id) > 128 or not run_id.replace("_", "").replace("-", "").isalnum():
            raise NotFound(f"evaluation run {run_id!r} not found")
        return self.root / f"{run_id}.json"

    def put(self, run: evaluator_pb2.EvaluationRun) -> None:
        path = self._path(run.id)
        tmp = path.with_suffix(".tmp")
        write_private(tmp, json_format.MessageToJson(run, preserving_proto_field_name=True))
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

    # a run's events: one JSON line each, appended by this process's event loop only, so the
    # last sequence of each run is kept in memory (counted from its file once) and readers
    # read on from the byte offset where they stopped

    def _events_path(self, run_id: str) -> Path:
        return self._path(run_id).with_suffix(".events.jsonl")

    def add_event(self, event: common_pb2.JobEvent) -> common_pb2.JobEvent:
        path = self._events_path(event.job_id)
        last = self._last_sequence.get(event.job_id)
        if last is None:
            last = len(self.events(event.job_id))
        event.sequence = last + 1
        event.created_at.GetCurrentTime()
        with open_private(path, "a") as out:
            out.write(json_format.MessageToJson(event, indent=None) + "\n")
        self._last_sequence[event.job_id] = event.sequence
        return event

    def read_events(self, run_id: str, offset: int = 0) -> tuple[list[common_pb2.JobEvent], int]:
        """The events written from byte ``offset`` on (whole lines), and the offset after them."""
        path = self._events_path(run_id)
        if not path.exists():
            return [], offset
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read()
        end = data.rfind(b"\n") + 1
        events = [
            json_format.Parse(line, common_pb2.JobEvent())
            for line in data[:end].decode().splitlines()
            if line.strip()
        ]
        return events, offset + end

    def events(self, run_id: str, after_sequence: int = 0) -> list[common_pb2.JobEvent]:
        return [e for e in self.read_events(run_id)[0] if e.sequence > after_sequence]


@dataclass(frozen=True)
class _RunView:
    """What ``tw_after_evaluate`` sees of a run (tunewright.core.hookspecs.EvalRunView)."""

    id: str
    model: str


def _status(run: evaluator_pb2.EvaluationRun, status: int, reason: str = "") -> None:
    run.status = status  # type: ignore[assignment]
    transition = run.history.add(status=status, reason=reason)
    transition.at.GetCurrentTime()


def _event(
    run_id: str,
    message: str,
    *,
    status: int = common_pb2.JOB_STATUS_UNSPECIFIED,
    level: int = common_pb2.EVENT_LEVEL_INFO,
) -> common_pb2.JobEvent:
    return common_pb2.JobEvent(
        job_id=run_id,
        message=message[:500],
        level=level,  # type: ignore[arg-type]
        kind=common_pb2.EVENT_KIND_STATUS if status else common_pb2.EVENT_KIND_MESSAGE,
        status=status,  # type: ignore[arg-type]
    )


class Evaluator(evaluator_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, context: ServiceContext[EvaluatorSettings]) -> None:
        self.context = context
        data = context.settings.data_dir / "evaluator"
        self.store = RunStore(data / "runs")
        self.workdir = private_dir(data / "work")  # models being evaluated: owner-only
        self.lookup = RegistryClient(
            context.settings.evaluator.registry_address, context.settings.grpc
        )
        #: run id -> (reason, when it was asked), for runs asked to stop (filled by the
        #: control listener, taken by the run; stale entries are pruned)
        self.cancel_requests: dict[str, tuple[str, dt.datetime]] = {}
        #: run id -> set (and dropped) when the run gets an event; streams wait on it
        self._event_added: dict[str, asyncio.Event] = {}

    def _add_event(self, event: common_pb2.JobEvent) -> common_pb2.JobEvent:
        recorded = self.store.add_event(event)
        waiting = self._event_added.pop(event.job_id, None)
        if waiting is not None:
            waiting.set()
        return recorded

    def _transition(self, run: evaluator_pb2.EvaluationRun, status: int, reason: str = "") -> None:
        """Change a run's status, store it, and record the change as an event of the run."""
        _status(run, status, reason)
        self._record(run, status, reason)

    def _record(self, run: evaluator_pb2.EvaluationRun, status: int, reason: str = "") -> None:
        """Store a run whose status was changed to ``status``, with the change as an event."""
        self.store.put(run)
        name = common_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()  # type: ignore[arg-type]
        level = (
            common_pb2.EVENT_LEVEL_ERROR
            if status == common_pb2.JOB_STATUS_FAILED
            else common_pb2.EVENT_LEVEL_INFO
        )
        self._add_event(
            _event(run.id, f"{name}: {reason}" if reason else name, status=status, level=level)
        )

    async def _publish_failed(self, run: evaluator_pb2.EvaluationRun) -> None:
        failed = events_pb2.EvaluatorRunFailed(
            meta=event_meta(producer=PRODUCER, workspace=run.workspace), run_id=run.id
        )
        failed.error.CopyFrom(run.error)
        await publish_until_acked(
            lambda: self.context.bus.publish(subjects.EVALUATOR_RUN_FAILED, failed, key=run.id),
            what=f"evaluation {run.id} {run.error.reason}",
        )

    async def _end(self, run: evaluator_pb2.EvaluationRun, status: int, reason: str) -> None:
        """Announce the end (until NATS takes it), then store it: never the other way."""
        _status(run, status, reason)
        await self._publish_failed(run)
        self._record(run, status, reason)

    async def _fail(self, run: evaluator_pb2.EvaluationRun, reason: str, message: str) -> None:
        run.error.reason, run.error.message = reason, message
        run.finished_at.GetCurrentTime()
        await self._end(run, common_pb2.JOB_STATUS_FAILED, reason)

    async def _cancel_here(self, run: evaluator_pb2.EvaluationRun, reason: str) -> None:
        run.error.reason, run.error.message = CANCELLED, reason
        run.finished_at.GetCurrentTime()
        await self._end(run, common_pb2.JOB_STATUS_CANCELLED, reason)

    # --- gRPC ---

    async def SubmitEvaluationRun(self, request: Any, context: Any) -> Any:
        spec = request.spec
        validate(spec, self.context.plugins.registries, self.context.settings.outbound)
        run_id = stable_id("eval", request.request_id) if request.request_id else new_id("eval")
        try:
            return evaluator_pb2.SubmitEvaluationRunResponse(run=self.store.get(run_id))
        except NotFound:
            pass
        run = evaluator_pb2.EvaluationRun(
            id=run_id, workspace=spec.workspace or "default", spec=spec
        )
        run.created_at.GetCurrentTime()
        self._transition(run, common_pb2.JOB_STATUS_QUEUED)
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
                    needs=m.needs,
                )
                for m in self.context.plugins.registries.metrics
            ]
        )

    async def CancelEvaluationRun(self, request: Any, context: Any) -> Any:
        run = self.store.get(request.run_id)
        reason = request.reason or "cancelled on request"
        if run.status in TERMINAL:
            raise FailedPrecondition(
                f"evaluation run {run.id} has already ended", reason="RUN_FINISHED"
            )
        if run.status == common_pb2.JOB_STATUS_RUNNING:
            # whichever evaluator process runs it stops at its next step
            await self.context.bus.publish(
                subjects.EVALUATOR_CONTROL_REQUESTED,
                events_pb2.EvaluatorControlRequested(
                    meta=event_meta(producer=PRODUCER, workspace=run.workspace),
                    run_id=run.id,
                    action=events_pb2.CONTROL_ACTION_CANCEL,
                    reason=reason,
                ),
                key=f"{run.id}:cancel",
            )
            self._add_event(_event(run.id, f"cancel requested: {reason}"))
        else:  # queued: nobody runs it yet; the worker skips it when the request arrives
            await self._cancel_here(run, reason)
        return evaluator_pb2.CancelEvaluationRunResponse(run=run)

    async def StreamEvaluationRunEvents(
        self, request: Any, context: Any
    ) -> AsyncIterator[evaluator_pb2.StreamEvaluationRunEventsResponse]:
        run_id = request.run_id
        await asyncio.to_thread(self.store.get, run_id)  # NOT_FOUND before the stream starts
        after, offset = request.after_sequence, 0
        while True:
            # taken before reading, so an event added while we read wakes the wait below
            added = self._event_added.setdefault(run_id, asyncio.Event())
            events, offset = await asyncio.to_thread(self.store.read_events, run_id, offset)
            for event in events:
                if event.sequence > after:
                    after = event.sequence
                    yield evaluator_pb2.StreamEvaluationRunEventsResponse(event=event)
            if events:
                continue
            # the status change that ends a run is itself an event, read before this check
            if (await asyncio.to_thread(self.store.get, run_id)).status in TERMINAL:
                self._event_added.pop(run_id, None)  # an ended run gets no more events
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(added.wait(), _STREAM_IDLE_S)

    # --- control ---

    async def control_loop(self) -> None:
        """Every evaluator process reads every control request, from ``control_window_s``
        back: one published while this process was down still cancels its run."""
        window = dt.timedelta(seconds=self.context.settings.evaluator.control_window_s)
        sub = await self.context.bus.js.subscribe(
            subjects.EVALUATOR_CONTROL_REQUESTED,
            ordered_consumer=True,
            config=js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
                opt_start_time=dt.datetime.now(dt.UTC) - window,
            ),
        )
        try:
            async for msg in sub.messages:
                request = Delivery.from_msg(msg, durable="").decode(
                    events_pb2.EvaluatorControlRequested
                )
                if request.action == events_pb2.CONTROL_ACTION_CANCEL:
                    ended = await asyncio.to_thread(self._ended, request.run_id)
                    self._note_cancel(request, ended=ended)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _ended(self, run_id: str) -> bool:
        try:
            return self.store.get(run_id).status in TERMINAL
        except NotFound:
            return False  # a run of another process, or one whose request has not come yet

    def _note_cancel(self, request: events_pb2.EvaluatorControlRequested, *, ended: bool) -> None:
        """Keep a cancel until its run takes it. Not kept: cancels of runs that have ended here
        (replayed after a restart) and, pruned at every new one, cancels older than the window
        (of runs another evaluator process holds, or that never came)."""
        now = dt.datetime.now(dt.UTC)
        oldest = now - dt.timedelta(seconds=self.context.settings.evaluator.control_window_s)
        asked = (
            request.meta.occurred_at.ToDatetime(tzinfo=dt.UTC)
            if request.meta.HasField("occurred_at")
            else now
        )
        if not ended:
            self.cancel_requests[request.run_id] = (request.reason or "cancelled", asked)
        for run_id, (_, at) in list(self.cancel_requests.items()):
            if at < oldest:
                del self.cancel_requests[run_id]

    def _take_cancel(self, run_id: str) -> str | None:
        """The reason this run was asked to stop, once; None when it was not."""
        request = self.cancel_requests.pop(run_id, None)
        return request[0] if request else None

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
        if run.status in TERMINAL:
            self._take_cancel(run_id)  # nothing left to stop
            return  # a redelivery of a finished run, or a run cancelled while queued
        reason = self._take_cancel(run_id)
        if reason is not None:  # cancelled (by another system, or before a restart) in time
            await self._cancel_here(run, reason)
            return
        self._transition(run, common_pb2.JOB_STATUS_RUNNING)
        workspace = run.workspace

        async def progress(message: str) -> None:
            reason = self._take_cancel(run_id)
            if reason is not None:
                raise RunCancelled(reason)
            recorded = self._add_event(_event(run_id, message))
            event = events_pb2.EvaluatorRunProgressed(
                meta=event_meta(producer=PRODUCER, workspace=workspace), run_id=run_id
            )
            event.event.CopyFrom(recorded)
            await self.context.bus.publish(
                subjects.EVALUATOR_RUN_PROGRESSED, event, key=f"{run_id}/{new_id('p')}"
            )

        evaluation = Evaluation(
            lookup=self.lookup,
            artifacts=self.context.artifacts,
            plugins=self.context.plugins.registries,
            workdir=self.workdir,
            outbound=self.context.settings.outbound,
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
        except RunCancelled as cancelled:
            log.info("evaluation cancelled run_id=%s", run_id)
            await self._cancel_here(run, cancelled.reason)
            return
        except TunewrightError as exc:
            await self._fail(run, exc.reason, exc.message)
            return
        except Exception as exc:
            # a bug or a model that cannot run: redelivering would fail the same way, so the
            # run fails now. The log gets the type and frames but not the message (it may
            # quote sample text), whatever formatter the process logs with.
            trace = format_exception_redacted(sys.exc_info()).replace("%", "%%")
            log.error("evaluation crashed run_id=%s error=%s\n" + trace, run_id, type(exc).__name__)
            await self._fail(
                run, "EVALUATION_ERROR", f"{type(exc).__name__} during the evaluation (see log)"
            )
            return
        done = outcome.run
        done.created_at.CopyFrom(run.created_at)
        done.history.extend(run.history)
        _status(done, common_pb2.JOB_STATUS_SUCCEEDED)
        completed = events_pb2.EvaluatorRunCompleted(
            meta=event_meta(producer=PRODUCER, workspace=workspace), run=done
        )
        # announced first, then stored as ended (see the module docstring)
        await publish_until_acked(
            lambda: self.context.bus.publish(
                subjects.EVALUATOR_RUN_COMPLETED, completed, key=run_id
            ),
            what=f"evaluation {run_id} completed",
        )
        self._record(done, common_pb2.JOB_STATUS_SUCCEEDED)
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


def background(
    context: ServiceContext[EvaluatorSettings],
) -> list[Callable[[], Awaitable[None]]]:
    return [_evaluator(context).control_loop]


DEFINITION = ServiceDefinition(
    name="evaluator",
    settings_cls=EvaluatorSettings,
    grpc=grpc_bindings,
    consumers=consumers,
    background=background,
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
