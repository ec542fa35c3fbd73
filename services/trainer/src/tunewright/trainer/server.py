"""The trainer service process: ``tunewright-trainer`` or ``python -m tunewright.trainer.server``.

- gRPC ``TrainerService``: validate, submit (validate, then publish ``tw.trainer.job.requested``
  -- the same path as a request from another system), get / list / stream jobs, cancel /
  pause / resume (a ``tw.trainer.control.requested`` every worker reads), checkpoints, methods.
- ``trainer-worker`` consumer: one job at a time per process (runner.Worker); several
  processes share the durable.
- background: a control listener (ephemeral ordered consumer on ``TW_CONTROL``, new messages
  only) and a recovery loop that re-queues jobs whose worker died.

Job state lives in SQLite under ``<data_dir>/trainer/`` (store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.js.errors
from nats.js import api as js_api

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import Delivery, EventBus, event_meta
from tunewright.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from tunewright.core.ids import check_job_id, new_id, stable_id
from tunewright.core.service import (
    Consumer,
    GrpcBinding,
    ServiceContext,
    ServiceDefinition,
)
from tunewright.core.service import main as run_service_main
from tunewright.events.v1 import events_pb2
from tunewright.registry.v1 import registry_pb2
from tunewright.trainer import convert
from tunewright.trainer.jobs import Checkpoint, ControlAction, Job, JobSpec, JobStatus, Transition
from tunewright.trainer.preflight import DatasetInfo, Preflight, preflight
from tunewright.trainer.runner import ModelIndex, ModelOutput, Worker, transition, worker_alive
from tunewright.trainer.settings import TrainerSettings
from tunewright.trainer.store import JobStore
from tunewright.trainer.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
PRODUCER = "trainer"
_DATASET_FACTS = (
    subjects.INGEST_DATASET_CURATED,
    subjects.SYNTH_DATASET_GENERATED,
    subjects.FEEDBACK_DATASET_COLLECTED,
)
_KIND_NAMES = {
    common_pb2.DATASET_KIND_SFT: "sft",
    common_pb2.DATASET_KIND_PREFERENCE: "preference",
    common_pb2.DATASET_KIND_UNPAIRED: "unpaired",
    common_pb2.DATASET_KIND_EVAL: "eval",
    common_pb2.DATASET_KIND_PROMPT: "prompt",
}
_STREAM_POLL_S = 0.25
_CATCH_UP_TIMEOUT_S = 5.0
_MAX_PAGE = 1000


# --- events on NATS ------------------------------------------------------------------------


class NatsJobEvents:
    """runner.JobEvents published on the bus, keyed so retries deduplicate."""

    def __init__(self, bus: EventBus, producer: str) -> None:
        self.bus = bus
        self.producer = producer

    def _meta(self, job: Job) -> common_pb2.EventMeta:
        return event_meta(producer=self.producer, workspace=job.spec.workspace)

    def _spec(self, job: Job) -> trainer_pb2.TrainingJobSpec:
        spec = trainer_pb2.TrainingJobSpec()
        spec.ParseFromString(job.spec_bytes)
        return spec

    async def _publish(self, subject: str, message: Any, key: str, job: Job) -> None:
        await self.bus.publish(subject, message, key=key, workspace=job.spec.workspace or None)

    async def requested(self, job: Job, *, key: str) -> None:
        msg = events_pb2.TrainerJobRequested(
            meta=self._meta(job), job_id=job.id, spec=self._spec(job)
        )
        await self._publish(subjects.TRAINER_JOB_REQUESTED, msg, key, job)

    async def control(self, job: Job, action: ControlAction, reason: str) -> None:
        pb_action = {
            ControlAction.CANCEL: events_pb2.CONTROL_ACTION_CANCEL,
            ControlAction.PAUSE: events_pb2.CONTROL_ACTION_PAUSE,
            ControlAction.RESUME: events_pb2.CONTROL_ACTION_RESUME,
        }[action]
        msg = events_pb2.TrainerControlRequested(
            meta=self._meta(job), job_id=job.id, action=pb_action, reason=reason
        )
        await self._publish(subjects.TRAINER_CONTROL_REQUESTED, msg, new_id("ctl"), job)

    async def started(self, job: Job, *, resumed_from_step: int) -> None:
        msg = events_pb2.TrainerJobStarted(
            meta=self._meta(job),
            job_id=job.id,
            worker_id=job.worker_id,
            attempt=job.attempt,
            resumed_from_step=resumed_from_step,
            spec=self._spec(job),
        )
        await self._publish(subjects.TRAINER_JOB_STARTED, msg, f"{job.id}:{job.attempt}", job)

    async def progressed(self, job: Job) -> None:
        msg = events_pb2.TrainerJobProgressed(
            meta=self._meta(job), job_id=job.id, progress=convert.progress_to_pb(job.progress)
        )
        key = f"{job.id}:{job.attempt}:{job.progress.step}"
        await self._publish(subjects.TRAINER_JOB_PROGRESSED, msg, key, job)

    async def checkpointed(self, job: Job, checkpoint: Checkpoint) -> None:
        msg = events_pb2.TrainerJobCheckpointed(
            meta=self._meta(job), job_id=job.id, checkpoint=convert.checkpoint_to_pb(checkpoint)
        )
        key = f"{job.id}:{checkpoint.step}"
        await self._publish(subjects.TRAINER_JOB_CHECKPOINTED, msg, key, job)

    async def paused(self, job: Job) -> None:
        msg = events_pb2.TrainerJobPaused(meta=self._meta(job), job_id=job.id)
        if job.latest_checkpoint is not None:
            msg.checkpoint.CopyFrom(convert.checkpoint_to_pb(job.latest_checkpoint))
        await self._publish(subjects.TRAINER_JOB_PAUSED, msg, f"{job.id}:{len(job.history)}", job)

    async def succeeded(self, job: Job, output: ModelOutput) -> None:
        spec = job.spec
        labels = dict(spec.labels)
        labels["seed"] = str(spec.seed)
        mv = registry_pb2.ModelVersion(
            id=output.model_version_id,
            workspace=spec.workspace,
            model=output.model,
            base_model=spec.base_model,
            weights=convert.ref_to_pb(output.weights),
            method=spec.method,
            parent_model_version_id=spec.parent_model_id,
            dataset_version_ids=list(spec.dataset_ids),
            chat_template=output.chat_template,
            eos_token=output.eos_token,
            tokenizer=convert.ref_to_pb(output.tokenizer),
            labels=labels,
        )
        mv.created_at.GetCurrentTime()
        msg = events_pb2.TrainerJobSucceeded(
            meta=self._meta(job),
            job_id=job.id,
            spec=self._spec(job),
            model_version=mv,
            metrics=output.metrics,
            metrics_log=convert.ref_to_pb(output.metrics_log),
            checkpoints=[convert.checkpoint_to_pb(c) for c in output.checkpoints],
        )
        if output.environment:
            msg.environment.CopyFrom(convert.environment_to_pb(output.environment))
            msg.code_version = msg.environment.code_version
        await self._publish(subjects.TRAINER_JOB_SUCCEEDED, msg, job.id, job)

    async def failed(self, job: Job) -> None:
        msg = events_pb2.TrainerJobFailed(
            meta=self._meta(job),
            job_id=job.id,
            error=convert.error_to_pb(job.error_reason, job.error_message),
        )
        if job.latest_checkpoint is not None:
            msg.last_checkpoint.CopyFrom(convert.checkpoint_to_pb(job.latest_checkpoint))
        await self._publish(subjects.TRAINER_JOB_FAILED, msg, job.id, job)

    async def cancelled(self, job: Job, *, reason: str) -> None:
        msg = events_pb2.TrainerJobCancelled(meta=self._meta(job), job_id=job.id, reason=reason)
        await self._publish(subjects.TRAINER_JOB_CANCELLED, msg, job.id, job)


# --- dataset versions from facts -----------------------------------------------------------


class FactDatasetResolver:
    """Dataset versions as announced by ingest / synth / feedback facts on ``TW_FACTS``.

    A lookup that misses re-reads those facts (an ephemeral ordered consumer per subject), so
    a version announced a moment ago is found without a registry call.
    """

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._known: dict[str, DatasetInfo] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, dataset_id: str) -> DatasetInfo | None:
        if dataset_id not in self._known:
            async with self._lock:
                if dataset_id not in self._known:
                    await self._catch_up()
        return self._known.get(dataset_id)

    async def _catch_up(self) -> None:
        for subject in _DATASET_FACTS:
            stream = await self.bus.js.find_stream_name_by_subject(subject)
            try:
                last = (await self.bus.js.get_last_msg(stream, subject)).seq
            except nats.js.errors.NotFoundError:
                continue  # nothing announced on this subject yet
            sub = await self.bus.js.subscribe(subject, ordered_consumer=True)
            try:
                while True:  # read up to the last message that existed when we looked
                    msg = await sub.next_msg(timeout=_CATCH_UP_TIMEOUT_S)
                    self._index(Delivery.from_msg(msg, durable="").decode())
                    if msg.metadata.sequence.stream >= (last or 0):
                        break
            finally:
                await sub.unsubscribe()

    def _index(self, fact: Any) -> None:
        dv = fact.dataset_version
        if not dv.id or "train" not in dv.splits:
            return
        self._known[dv.id] = DatasetInfo(
            id=dv.id,
            kind=_KIND_NAMES.get(dv.kind, "unspecified"),
            train=convert.ref_from_pb(dv.splits["train"]),
            eval=convert.ref_from_pb(dv.splits["eval"]) if "eval" in dv.splits else None,
        )


# --- the service ---------------------------------------------------------------------------


class Trainer:
    """Everything one trainer process shares: store, events, worker, resolvers."""

    def __init__(self, context: ServiceContext[TrainerSettings]) -> None:
        settings = context.settings
        self.settings = settings
        self.plugins = context.plugins
        self.bus = context.bus
        self.store = JobStore(settings.data_dir / "trainer" / "jobs.db")
        context.closers.append(self.store.close)
        self.events = NatsJobEvents(context.bus, f"{PRODUCER}@{settings.workspace}")
        self.datasets = FactDatasetResolver(context.bus)
        self.models = ModelIndex(self.store)
        self.worker = Worker(
            settings=settings,
            store=self.store,
            artifacts=context.artifacts,
            plugins=context.plugins,
            events=self.events,
            datasets=self.datasets,
        )

    async def preflight(self, spec: JobSpec) -> Preflight:
        return await preflight(
            spec,
            registries=self.plugins.registries,
            datasets=self.datasets,
            models=self.models,
            default_checkpoint_every=self.settings.trainer.checkpoint_every_steps,
            outbound=self.settings.outbound,
            tracking_dir=self.settings.data_dir / "trainer" / "tracking",
        )

    def with_parent_defaults(
        self, spec: trainer_pb2.TrainingJobSpec
    ) -> trainer_pb2.TrainingJobSpec:
        """``spec`` with its parent's base model and seed where it leaves them unset."""
        if not spec.parent_model.id:
            return spec
        return convert.with_parent_defaults(spec, self.models.producer_spec(spec.parent_model.id))

    def new_job(self, job_id: str, spec: JobSpec, spec_bytes: bytes, status: JobStatus) -> Job:
        now = time.time()
        return Job(
            id=job_id,
            spec=spec,
            spec_bytes=spec_bytes,
            status=status,
            created_at=now,
            history=[Transition(status, now)],
        )

    # --- the worker's request handler ---

    async def handle_request(self, delivery: Delivery) -> None:
        request = delivery.decode(events_pb2.TrainerJobRequested)
        if not request.job_id:
            raise InvalidArgument(
                "training request without a job id",
                field_violations=[FieldViolation("job_id", "required")],
            )
        # the job id names the work folder that is later deleted: "../../artifacts" must not
        check_job_id(request.job_id)
        if self.store.find(request.job_id) is None:
            await self._accept_outside_request(request)
        await self.worker.run(request.job_id)

    async def _accept_outside_request(self, request: events_pb2.TrainerJobRequested) -> None:
        """A request published by another system (not through Submit): validate it here."""
        spec_pb = self.with_parent_defaults(request.spec)
        spec = convert.spec_from_pb(spec_pb)
        job = self.new_job(request.job_id, spec, spec_pb.SerializeToString(), JobStatus.VALIDATING)
        job, _ = self.store.create(job)
        result = await self.preflight(spec)
        if result.valid:

            def queue(j: Job) -> None:
                if j.status is JobStatus.VALIDATING:
                    transition(j, JobStatus.QUEUED)

            self.store.update(job.id, queue)
            return
        message = "; ".join(f"{f}: {d}" for f, d in result.violations)

        def fail(j: Job) -> None:
            j.error_reason = "INVALID_SPEC"
            j.error_message = message
            transition(j, JobStatus.FAILED, "INVALID_SPEC")

        job = self.store.update(job.id, fail)
        self.store.add_event(job.id, message="failed: INVALID_SPEC", level="error", kind="status")
        await self.events.failed(job)

    # --- control ---

    async def control_loop(self) -> None:
        """Every worker reads every control request; the one running the job acts."""
        sub = await self.bus.js.subscribe(
            subjects.TRAINER_CONTROL_REQUESTED,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.NEW,
        )
        try:
            async for msg in sub.messages:
                request = Delivery.from_msg(msg, durable="").decode(
                    events_pb2.TrainerControlRequested
                )
                action = {
                    events_pb2.CONTROL_ACTION_CANCEL: "cancel",
                    events_pb2.CONTROL_ACTION_PAUSE: "pause",
                }.get(request.action)
                if action is not None and self.worker.control(request.job_id, action):
                    log.info("control applied job_id=%s action=%s", request.job_id, action)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # --- recovery ---

    async def recovery_loop(self) -> None:
        """Re-queue running jobs whose worker is gone; the next free worker resumes them."""
        cfg = self.settings.trainer
        while True:
            now = time.time()
            for job in self.store.running():
                if job.worker_id == self.worker.worker_id:
                    continue
                if worker_alive(job, now=now, orphan_after_s=cfg.orphan_after_s):
                    continue
                log.warning("re-queueing orphaned job job_id=%s attempt=%d", job.id, job.attempt)
                await self.events.requested(job, key=f"{job.id}:recover:{job.attempt}")
            await asyncio.sleep(cfg.recovery_interval_s)


def _page_size(page: common_pb2.PageRequest) -> int:
    return min(max(page.page_size, 0) or 50, _MAX_PAGE)


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Thin: pb -> domain (convert.py) -> store / events -> pb."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer

    async def ValidateTrainingJob(
        self, request: trainer_pb2.ValidateTrainingJobRequest, context: Any
    ) -> trainer_pb2.ValidateTrainingJobResponse:
        spec_pb = self.t.with_parent_defaults(request.spec)
        result = await self.t.preflight(convert.spec_from_pb(spec_pb))
        return trainer_pb2.ValidateTrainingJobResponse(
            valid=result.valid,
            violations=convert.violations_to_pb(result.violations),
            estimated_memory_bytes=result.estimated_memory_bytes,
            device_memory_bytes=result.device_memory_bytes,
        )

    async def SubmitTrainingJob(
        self, request: trainer_pb2.SubmitTrainingJobRequest, context: Any
    ) -> trainer_pb2.SubmitTrainingJobResponse:
        spec_pb = self.t.with_parent_defaults(request.spec)
        spec = convert.spec_from_pb(spec_pb)
        result = await self.t.preflight(spec)
        if not result.valid:
            raise InvalidArgument(
                f"training job spec is invalid ({len(result.violations)} problems)",
                reason="INVALID_TRAINING_SPEC",
                field_violations=[FieldViolation(f, d) for f, d in result.violations],
            )
        job_id = stable_id("job", request.request_id) if request.request_id else new_id("job")
        job = self.t.new_job(
            job_id, spec, spec_pb.SerializeToString(deterministic=True), JobStatus.QUEUED
        )
        job, _ = self.t.store.create(job, request_id=request.request_id)
        if job.status is JobStatus.QUEUED:
            # also on a repeated submit: the message id deduplicates, a lost publish is redone
            await self.t.events.requested(job, key=job.id)
        return trainer_pb2.SubmitTrainingJobResponse(job=convert.job_to_pb(job))

    async def GetTrainingJob(
        self, request: trainer_pb2.GetTrainingJobRequest, context: Any
    ) -> trainer_pb2.GetTrainingJobResponse:
        return trainer_pb2.GetTrainingJobResponse(
            job=convert.job_to_pb(self.t.store.get(request.job_id))
        )

    async def ListTrainingJobs(
        self, request: trainer_pb2.ListTrainingJobsRequest, context: Any
    ) -> trainer_pb2.ListTrainingJobsResponse:
        size = _page_size(request.page)
        jobs = self.t.store.list(
            workspace=request.workspace,
            statuses=[convert.status_from_pb(s) for s in request.statuses],
            after_id=request.page.page_token,
            limit=size + 1,
        )
        response = trainer_pb2.ListTrainingJobsResponse(
            jobs=[convert.job_to_pb(j) for j in jobs[:size]]
        )
        if len(jobs) > size:
            response.page.next_page_token = jobs[size - 1].id
        return response

    async def CancelTrainingJob(
        self, request: trainer_pb2.CancelTrainingJobRequest, context: Any
    ) -> trainer_pb2.CancelTrainingJobResponse:
        job = self.t.store.get(request.job_id)
        reason = request.reason or "cancelled on request"
        if job.status.terminal:
            raise FailedPrecondition(
                f"job {job.id} is already {job.status.value}", reason="JOB_FINISHED"
            )
        if job.status is JobStatus.RUNNING:

            def ask(j: Job) -> None:
                j.requested_control = "cancel"

            job = self.t.store.update(job.id, ask)
            await self.t.events.control(job, ControlAction.CANCEL, reason)
        else:  # queued / paused / validating: nobody runs it, cancel it here
            job = await self.t.worker.finish_cancelled(job, reason)
        return trainer_pb2.CancelTrainingJobResponse(job=convert.job_to_pb(job))

    async def PauseTrainingJob(
        self, request: trainer_pb2.PauseTrainingJobRequest, context: Any
    ) -> trainer_pb2.PauseTrainingJobResponse:
        job = self.t.store.get(request.job_id)
        if job.status is JobStatus.RUNNING:

            def ask(j: Job) -> None:
                j.requested_control = "pause"

            job = self.t.store.update(job.id, ask)
            await self.t.events.control(job, ControlAction.PAUSE, "paused on request")
        elif job.status is JobStatus.QUEUED:

            def pause(j: Job) -> None:
                transition(j, JobStatus.PAUSED, "paused before it started")

            job = self.t.store.update(job.id, pause)
            await self.t.events.paused(job)
        else:
            raise FailedPrecondition(
                f"job {job.id} is {job.status.value}: only queued or running jobs pause",
                reason="JOB_NOT_PAUSABLE",
            )
        return trainer_pb2.PauseTrainingJobResponse(job=convert.job_to_pb(job))

    async def ResumeTrainingJob(
        self, request: trainer_pb2.ResumeTrainingJobRequest, context: Any
    ) -> trainer_pb2.ResumeTrainingJobResponse:
        def resume(j: Job) -> bool:
            if j.status is not JobStatus.PAUSED:
                return False
            transition(j, JobStatus.QUEUED, "resumed")
            return True

        job = self.t.store.update(request.job_id, resume)
        if job.status is not JobStatus.QUEUED:
            raise FailedPrecondition(
                f"job {job.id} is {job.status.value}: only paused jobs resume",
                reason="JOB_NOT_PAUSED",
            )
        await self.t.events.requested(job, key=f"{job.id}:resume:{len(job.history)}")
        return trainer_pb2.ResumeTrainingJobResponse(job=convert.job_to_pb(job))

    async def StreamTrainingJobEvents(
        self, request: trainer_pb2.StreamTrainingJobEventsRequest, context: Any
    ) -> AsyncIterator[trainer_pb2.StreamTrainingJobEventsResponse]:
        self.t.store.get(request.job_id)  # NOT_FOUND before the stream starts
        after = request.after_sequence
        while True:
            for event in self.t.store.events(request.job_id, after_sequence=after):
                after = event.sequence
                yield trainer_pb2.StreamTrainingJobEventsResponse(event=convert.event_to_pb(event))
            job = self.t.store.get(request.job_id)
            if job.status.terminal and not self.t.store.events(
                request.job_id, after_sequence=after
            ):
                return
            await asyncio.sleep(_STREAM_POLL_S)

    async def ListTrainingCheckpoints(
        self, request: trainer_pb2.ListTrainingCheckpointsRequest, context: Any
    ) -> trainer_pb2.ListTrainingCheckpointsResponse:
        self.t.store.get(request.job_id)
        return trainer_pb2.ListTrainingCheckpointsResponse(
            checkpoints=[
                convert.checkpoint_to_pb(c) for c in self.t.store.checkpoints(request.job_id)
            ]
        )

    async def ListTrainingMethods(
        self, request: trainer_pb2.ListTrainingMethodsRequest, context: Any
    ) -> trainer_pb2.ListTrainingMethodsResponse:
        registries = self.t.plugins.registries
        return trainer_pb2.ListTrainingMethodsResponse(
            methods=[
                trainer_pb2.TrainingMethodInfo(
                    name=m.name,
                    description=m.description,
                    dataset_kinds=sorted(m.dataset_kinds),
                    plugin=m.plugin,
                )
                for m in registries.training_methods
            ],
            base_model_schemes=list(registries.base_models.names()),
        )


def _trainer(context: ServiceContext[TrainerSettings]) -> Trainer:
    trainer = context.resources.get("trainer")
    if trainer is None:
        trainer = context.resources["trainer"] = Trainer(context)
    return trainer  # type: ignore[no-any-return]


def grpc_bindings(context: ServiceContext[TrainerSettings]) -> list[GrpcBinding]:
    servicer = TrainerServicer(_trainer(context))
    return [
        GrpcBinding(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[TrainerSettings]) -> list[Consumer]:
    # concurrency 1: one job per worker process at a time
    return [Consumer("trainer-worker", _trainer(context).handle_request, concurrency=1)]


def background(
    context: ServiceContext[TrainerSettings],
) -> list[Callable[[], Awaitable[None]]]:
    trainer = _trainer(context)
    return [trainer.control_loop, trainer.recovery_loop]


DEFINITION = ServiceDefinition(
    name="trainer",
    settings_cls=TrainerSettings,
    grpc=grpc_bindings,
    consumers=consumers,
    background=background,
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["DEFINITION", "Trainer", "TrainerServicer", "main"]
