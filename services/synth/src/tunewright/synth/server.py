"""The synth service process: ``tunewright-synth`` or ``python -m tunewright.synth.server``.

Owns synthetic examples, preference candidates and human feedback. gRPC
(``tunewright.synth.v1.SynthService``): submit, get, list, cancel, stream events. A submitted
job is recorded and its request published (``tw.synth.dataset.requested``,
``tw.synth.candidates.requested`` or ``tw.feedback.collection.requested``, by the spec's
task); the ``synth-worker`` consumer (:mod:`tunewright.synth.worker`) runs it, exactly as a
request a pipeline or another system publishes. The servicer is thin: pb -> domain -> pb;
domain errors become status codes in the core's error interceptor.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import FieldViolation, InvalidArgument
from tunewright.core.service import Consumer, GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.synth import convert
from tunewright.synth.jobs import JobStore, now_ts
from tunewright.synth.settings import SynthSettings
from tunewright.synth.synthetic import build_generator
from tunewright.synth.v1 import synth_pb2, synth_pb2_grpc
from tunewright.synth.worker import SynthWorker

SERVICE_NAME = synth_pb2.DESCRIPTOR.services_by_name["SynthService"].full_name
_STREAM_POLL_S = 0.2


def new_job_id(workspace: str, request_id: str = "") -> str:
    if request_id:
        return "syn-" + hashlib.sha256(f"{workspace}\n{request_id}".encode()).hexdigest()[:24]
    return "syn-" + uuid.uuid4().hex[:24]


def validate(spec: synth_pb2.SynthJobSpec) -> None:
    """What can be checked without the registry; the worker checks the rest."""
    task = spec.WhichOneof("task")
    if task is None:
        raise InvalidArgument(
            "spec needs a task",
            reason="INVALID_SYNTH_SPEC",
            field_violations=[
                FieldViolation(
                    "spec.task",
                    "one of synthetic_examples, preference_candidates, feedback_collection",
                )
            ],
        )
    if task == "synthetic_examples":
        convert.synthesis_task(spec, spec.workspace)
    elif task == "preference_candidates" and not spec.preference_candidates.feedback_dataset:
        raise InvalidArgument(
            "feedback_dataset is required",
            reason="INVALID_SYNTH_SPEC",
            field_violations=[
                FieldViolation("spec.preference_candidates.feedback_dataset", "required")
            ],
        )
    elif task == "feedback_collection" and not (
        spec.feedback_collection.feedback_dataset and spec.feedback_collection.output_dataset
    ):
        raise InvalidArgument(
            "feedback_dataset and output_dataset are required",
            reason="INVALID_SYNTH_SPEC",
            field_violations=[
                FieldViolation("spec.feedback_collection", "feedback_dataset and output_dataset")
            ],
        )


class SynthServicer(synth_pb2_grpc.SynthServiceServicer):
    def __init__(
        self, context: ServiceContext[SynthSettings], jobs: JobStore, worker: SynthWorker
    ) -> None:
        self.settings = context.settings
        self.plugins = context.plugins.registries
        self.jobs = jobs
        self.worker = worker

    async def SubmitSynthJob(
        self, request: synth_pb2.SubmitSynthJobRequest, context: Any
    ) -> synth_pb2.SubmitSynthJobResponse:
        spec = synth_pb2.SynthJobSpec()
        spec.CopyFrom(request.spec)
        spec.workspace = spec.workspace or self.settings.workspace
        validate(spec)
        if spec.WhichOneof("task") == "synthetic_examples":
            # the generator's params (its base_url against outbound.allowed_urls) at submit
            task = convert.synthesis_task(spec, spec.workspace)
            build_generator(
                self.plugins, task.generator, task.generator_params, self.settings.outbound
            )
        job = synth_pb2.SynthJob(
            id=new_job_id(spec.workspace, request.request_id),
            workspace=spec.workspace,
            spec=spec,
            status=common_pb2.JOB_STATUS_QUEUED,
            created_at=now_ts(),
        )
        job.history.add(status=common_pb2.JOB_STATUS_VALIDATING, at=now_ts(), reason="submitted")
        job.history.add(status=common_pb2.JOB_STATUS_QUEUED, at=now_ts(), reason="spec valid")
        key = f"{spec.workspace}\n{request.request_id}" if request.request_id else None
        job, created = self.jobs.create(job, request_key=key)
        if created:
            await self.worker.publish_request(job)
        return synth_pb2.SubmitSynthJobResponse(job=job)

    async def GetSynthJob(
        self, request: synth_pb2.GetSynthJobRequest, context: Any
    ) -> synth_pb2.GetSynthJobResponse:
        return synth_pb2.GetSynthJobResponse(job=self.jobs.get(request.job_id))

    async def ListSynthJobs(
        self, request: synth_pb2.ListSynthJobsRequest, context: Any
    ) -> synth_pb2.ListSynthJobsResponse:
        jobs, page = self.jobs.list_page(
            request.workspace or self.settings.workspace, request.statuses, request.page
        )
        return synth_pb2.ListSynthJobsResponse(jobs=jobs, page=page)

    async def CancelSynthJob(
        self, request: synth_pb2.CancelSynthJobRequest, context: Any
    ) -> synth_pb2.CancelSynthJobResponse:
        job = self.jobs.request_cancel(request.job_id)
        if job.status == common_pb2.JOB_STATUS_QUEUED:
            # not started: the worker acks its request without running it
            await self.worker.set_status(
                job, common_pb2.JOB_STATUS_CANCELLED, request.reason or "cancelled"
            )
        return synth_pb2.CancelSynthJobResponse(job=self.jobs.get(job.id))

    async def StreamSynthJobEvents(
        self, request: synth_pb2.StreamSynthJobEventsRequest, context: Any
    ) -> AsyncIterator[synth_pb2.StreamSynthJobEventsResponse]:
        async for event in self.jobs.follow_events(
            request.job_id, request.after_sequence, poll_s=_STREAM_POLL_S
        ):
            yield synth_pb2.StreamSynthJobEventsResponse(event=event)


def _wiring(context: ServiceContext[SynthSettings]) -> tuple[JobStore, SynthWorker]:
    """The servicer and the consumer of one context share a job store and a worker."""
    existing = context.resources.get("synth")
    if existing is None:
        jobs = JobStore(context.settings.data_dir / "synth" / "jobs.sqlite")
        existing = (jobs, SynthWorker(context, jobs))
        context.resources["synth"] = existing
        context.closers.append(jobs.close)
    jobs, worker = existing
    return jobs, worker


def grpc_bindings(context: ServiceContext[SynthSettings]) -> list[GrpcBinding]:
    jobs, worker = _wiring(context)
    servicer = SynthServicer(context, jobs, worker)
    return [GrpcBinding(synth_pb2_grpc.add_SynthServiceServicer_to_server, servicer, SERVICE_NAME)]


def consumers(context: ServiceContext[SynthSettings]) -> list[Consumer]:
    _jobs, worker = _wiring(context)
    concurrency = context.settings.synth.worker_concurrency
    return [Consumer("synth-worker", worker.handle, concurrency=concurrency)]


DEFINITION = ServiceDefinition(
    name="synth", settings_cls=SynthSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
