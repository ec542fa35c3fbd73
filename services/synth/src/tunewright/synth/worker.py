"""The ``synth-worker`` consumer: one synth job per ``.requested`` event.

Three requests share the work-queue stream TW_SYNTH_WORK: ``tw.synth.dataset.requested``
(synthetic examples), ``tw.synth.candidates.requested`` and ``tw.feedback.collection.requested``
(preference data, :mod:`tunewright.synth.preferences`). The gRPC ``SubmitSynthJob`` records
the job and publishes the request; a request another system publishes is recorded on arrival.
Every job moves queued -> running -> succeeded | failed | cancelled in the job store, with its
events stored and published on ``tw.synth.job.progressed``; a redelivered request for a
finished job is acked without running again. The fact that ends a job is published before the
final status is stored (a failure's is retried until NATS takes it): a job marked finished has
announced it, so a NATS blip at the end cannot leave a pipeline waiting for a fact that was
never sent.

Synthetic examples end in ingest, by event like any other producer: the rows (seeds +
accepted synthetic rows) are stored as a JSONL artifact, ``tw.ingest.dataset.requested`` is
published for ingest job ``<synth job id>-ingest``, and the worker waits for that job's
``tw.ingest.dataset.curated`` (or ``.rejected``) fact, read from the TW_FACTS stream from the
job's start (so a redelivered request finds an outcome that arrived while no one waited).
Then ``tw.synth.dataset.generated`` carries ingest's dataset version and the synth counts. The
rows' upload is deleted once ingest has finished with it, if synth's put created it (ingest
deletes only its own uploads).
With ``human_review`` the run waits for reviewers before any of this (the same cancel check
applies); the version's labels name the review backend and whether it was simulated.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import socket
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message
from nats.js import api as js_api

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef, private_dir
from tunewright.core.bus import Delivery, decode_event, event_meta, publish_until_acked
from tunewright.core.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    TunewrightError,
)
from tunewright.core.registry_client import RegistryClient
from tunewright.core.service import NotImplementedYet, ServiceContext
from tunewright.events.v1 import events_pb2
from tunewright.ingest.v1 import ingest_pb2
from tunewright.registry.v1 import registry_pb2
from tunewright.synth import convert
from tunewright.synth.jobs import TERMINAL, JobStore, now_ts
from tunewright.synth.preferences import Preferences
from tunewright.synth.settings import SynthSettings
from tunewright.synth.synthetic import (
    SPLIT_PIN_FIELD,
    Synthesis,
    SynthesisTask,
    SyntheticExamples,
)
from tunewright.synth.v1 import synth_pb2

log = logging.getLogger(__name__)

PRODUCER = f"synth@{socket.gethostname()}"

#: the request subject of each task kind (the oneof ``SynthJobSpec.task``)
REQUEST_SUBJECTS: Mapping[str, str] = {
    "synthetic_examples": subjects.SYNTH_DATASET_REQUESTED,
    "preference_candidates": subjects.SYNTH_CANDIDATES_REQUESTED,
    "feedback_collection": subjects.FEEDBACK_COLLECTION_REQUESTED,
}
_REQUEST_MESSAGES: Mapping[str, type[Message]] = {
    "synthetic_examples": events_pb2.SynthDatasetRequested,
    "preference_candidates": events_pb2.SynthCandidatesRequested,
    "feedback_collection": events_pb2.FeedbackCollectionRequested,
}
_REQUEST_TYPES = tuple(_REQUEST_MESSAGES.values())


class SynthWorker:
    def __init__(self, context: ServiceContext[SynthSettings], jobs: JobStore) -> None:
        self.context = context
        self.jobs = jobs
        section = context.settings.synth
        workdir = private_dir(context.settings.data_dir / "synth")  # datasets, models: 0700
        registry = RegistryClient(section.registry_address, context.settings.grpc)
        self.preferences = Preferences(
            registry=registry,
            artifacts=context.artifacts,
            plugins=context.plugins.registries,
            workdir=workdir,
        )
        self.synthetic = SyntheticExamples(
            registry=registry,
            artifacts=context.artifacts,
            plugins=context.plugins.registries,
            workdir=workdir,
            embedding_model=section.embedding_model,
            outbound=context.settings.outbound,
        )

    # --- events ---
    async def job_event(
        self,
        job: synth_pb2.SynthJob,
        message: str,
        *,
        kind: int = common_pb2.EVENT_KIND_MESSAGE,
        level: int = common_pb2.EVENT_LEVEL_INFO,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Store a job event (for StreamSynthJobEvents) and publish it as progress."""
        event = self.jobs.add_event(
            common_pb2.JobEvent(
                job_id=job.id,
                level=level,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
                message=message,
                status=job.status,
                metrics=dict(metrics or {}),
            )
        )
        key = f"{job.id}:{event.sequence}"
        await self.context.bus.publish(
            subjects.SYNTH_JOB_PROGRESSED,
            events_pb2.SynthJobProgressed(
                meta=event_meta(producer=PRODUCER, workspace=job.workspace, event_id=key),
                job_id=job.id,
                event=event,
            ),
            key=key,
            workspace=job.workspace,
        )

    async def set_status(self, job: synth_pb2.SynthJob, status: int, reason: str) -> None:
        self.jobs.set_status(job, status, reason)
        await self.job_event(job, reason, kind=common_pb2.EVENT_KIND_STATUS)

    async def publish_request(self, job: synth_pb2.SynthJob) -> None:
        task = job.spec.WhichOneof("task") or ""
        message = _REQUEST_MESSAGES[task](
            meta=event_meta(producer=PRODUCER, workspace=job.workspace),
            job_id=job.id,
            spec=job.spec,
        )
        await self.context.bus.publish(
            REQUEST_SUBJECTS[task], message, key=job.id, workspace=job.workspace
        )

    async def _failed(self, job: synth_pb2.SynthJob, exc: TunewrightError) -> None:
        """Announce the failure, until NATS takes it; the caller stores the status after."""
        fact = events_pb2.SynthJobFailed(
            meta=event_meta(producer=PRODUCER, workspace=job.workspace), job_id=job.id
        )
        fact.error.reason, fact.error.message = exc.reason, exc.message
        await publish_until_acked(
            lambda: self.context.bus.publish(subjects.SYNTH_JOB_FAILED, fact, key=job.id),
            what=f"synth job {job.id} {exc.reason}",
        )

    # --- the consumer ---
    async def handle(self, delivery: Delivery) -> None:
        message = delivery.decode()
        if not isinstance(message, _REQUEST_TYPES):
            raise NotImplementedYet(f"synth cannot handle {delivery.subject}")
        job_id = getattr(message, "job_id", "") or delivery.msg_id
        spec: synth_pb2.SynthJobSpec = message.spec  # type: ignore[attr-defined]
        workspace = spec.workspace or delivery.workspace or self.context.settings.workspace
        job = self.jobs.find(job_id)
        if job is None:  # published by another system (a pipeline) straight to NATS
            job = synth_pb2.SynthJob(
                id=job_id,
                workspace=workspace,
                spec=spec,
                status=common_pb2.JOB_STATUS_QUEUED,
                created_at=now_ts(),
            )
            job.spec.workspace = workspace
            job.history.add(status=common_pb2.JOB_STATUS_QUEUED, at=now_ts(), reason="requested")
            job, _ = self.jobs.create(job)
        if job.status in TERMINAL:
            log.info("synth job already finished job_id=%s: acking the redelivery", job.id)
            return
        if self.jobs.cancel_requested(job.id):
            await self._failed(job, Cancelled("cancelled before it started"))
            await self.set_status(job, common_pb2.JOB_STATUS_CANCELLED, "cancelled before start")
            return
        await self.set_status(job, common_pb2.JOB_STATUS_RUNNING, "running")
        try:
            if isinstance(message, events_pb2.SynthDatasetRequested):
                await self._synthetic(job)
            elif isinstance(message, events_pb2.SynthCandidatesRequested):
                await self._candidates(job)
            else:
                await self._collect(job)
        # the fact first: a job stored as finished has announced it (see the module docstring)
        except Cancelled as exc:
            job = self.jobs.get(job.id)
            await self._failed(job, exc)
            await self.set_status(job, common_pb2.JOB_STATUS_CANCELLED, exc.message)
        except TunewrightError as exc:
            log.warning("synth job failed job_id=%s reason=%s", job.id, exc.reason)
            job = self.jobs.get(job.id)
            job.error.CopyFrom(common_pb2.ErrorDetail(reason=exc.reason, message=exc.message))
            await self._failed(job, exc)
            await self.set_status(job, common_pb2.JOB_STATUS_FAILED, exc.reason)

    def _meta(self, job: synth_pb2.SynthJob) -> common_pb2.EventMeta:
        return event_meta(producer=PRODUCER, workspace=job.workspace)

    async def _candidates(self, job: synth_pb2.SynthJob) -> None:
        published = await self.preferences.candidates(job.id, job.spec)
        await self.context.bus.publish(
            subjects.SYNTH_CANDIDATES_PUBLISHED,
            events_pb2.SynthCandidatesPublished(
                meta=self._meta(job),
                job_id=job.id,
                feedback_backend=published.backend,
                feedback_dataset=published.dataset,
                records=published.records,
                review_url=published.review_url,
            ),
            key=job.id,
        )
        job.counts["records_published"] = published.records
        await self.set_status(job, common_pb2.JOB_STATUS_SUCCEEDED, "candidates published")

    async def _collect(self, job: synth_pb2.SynthJob) -> None:
        async def progress(message: str, metrics: dict[str, float]) -> None:
            await self.job_event(job, message, metrics=metrics)

        collected = await self.preferences.collect(
            job.id,
            job.spec,
            progress=progress,
            cancelled=lambda: self.jobs.cancel_requested(job.id),
        )
        await self.context.bus.publish(
            subjects.FEEDBACK_DATASET_COLLECTED,
            events_pb2.FeedbackDatasetCollected(
                meta=self._meta(job),
                job_id=job.id,
                dataset_version=collected.dataset_version,
                pairs=collected.pairs,
                annotators=collected.annotators,
                agreement=collected.agreement,
                simulated=collected.simulated,
            ),
            key=job.id,
        )
        job.dataset_version_id = collected.dataset_version.id
        job.counts.update(
            pairs=collected.pairs,
            annotators=collected.annotators,
            ranked_records=collected.dataset_version.counts.total,
            agreement_records=collected.agreement_records,
            **{f"dropped_{reason}": n for reason, n in collected.drops.items()},
        )
        await self.set_status(job, common_pb2.JOB_STATUS_SUCCEEDED, "feedback collected")

    async def _synthetic(self, job: synth_pb2.SynthJob) -> None:
        task = convert.synthesis_task(job.spec, job.workspace)

        async def progress(message: str, metrics: Mapping[str, float]) -> None:
            await self.job_event(job, message, metrics=metrics)

        synthesis = await self.synthetic.run(
            job.id, task, progress=progress, cancelled=lambda: self.jobs.cancel_requested(job.id)
        )
        report = await self.context.artifacts.put_bytes(
            json.dumps(synthesis.report, indent=2, sort_keys=True).encode(), "application/json"
        )
        job.report.CopyFrom(_ref_pb(report))
        job.counts.update(synthesis.counts)
        self.jobs.save(job)
        await self.job_event(
            job,
            "synthetic rows filtered",
            kind=common_pb2.EVENT_KIND_METRICS,
            metrics={k: float(v) for k, v in synthesis.counts.items()},
        )
        if not synthesis.counts["accepted"]:
            raise FailedPrecondition(
                f"no synthetic row survived the filters"
                f"{' and the review' if task.review else ''} ({_drops(synthesis.counts)})",
                reason="NO_SYNTHETIC_ROWS",
            )
        if self.jobs.cancel_requested(job.id):
            raise Cancelled(f"synth job {job.id} cancelled")
        outcome = await self._ingest(job, task, synthesis)
        version = registry_pb2.DatasetVersion()
        version.CopyFrom(outcome.dataset_version)
        version.source = registry_pb2.DATASET_SOURCE_SYNTHETIC
        counts = dict(synthesis.counts)
        counts.update(
            ingest_total=outcome.counts.total_rows,
            ingest_accepted=outcome.counts.accepted,
            ingest_duplicates=outcome.counts.duplicates,
            ingest_filtered=outcome.counts.filtered,
            ingest_quarantined=outcome.counts.quarantined,
        )
        job.counts.update(counts)
        job.dataset_version_id = version.id
        await self.context.bus.publish(
            subjects.SYNTH_DATASET_GENERATED,
            events_pb2.SynthDatasetGenerated(
                meta=self._meta(job),
                job_id=job.id,
                dataset_version=version,
                counts=counts,
                ingest_job_id=job.ingest_job_id,
                report=job.report,
            ),
            key=job.id,
        )
        await self.set_status(
            job,
            common_pb2.JOB_STATUS_SUCCEEDED,
            f"dataset version {version.id}: {synthesis.counts['accepted']} synthetic rows",
        )

    async def _ingest(
        self, job: synth_pb2.SynthJob, task: SynthesisTask, synthesis: Synthesis
    ) -> events_pb2.IngestDatasetCurated:
        """Send the rows through ingest (by event) and wait for its dataset version."""
        seed = synthesis.seed_dataset
        rows = synthesis.jsonl()
        # ours to delete afterwards only if this put creates it (the store is shared)
        existed = await self.context.artifacts.exists(ArtifactRef(hashlib.sha256(rows).hexdigest()))
        source = await self.context.artifacts.put_bytes(rows, "application/jsonl")
        job.ingest_job_id = f"{job.id}-ingest"
        self.jobs.save(job)
        spec = ingest_pb2.IngestSpec(
            origin=registry_pb2.DATASET_SOURCE_SYNTHETIC,
            workspace=job.workspace,
            dataset=task.output_dataset or seed.dataset,
            source=_ref_pb(source),
            file_format=ingest_pb2.FILE_FORMAT_JSONL,
            record_format=ingest_pb2.RECORD_FORMAT_MESSAGES,
            kind=common_pb2.DATASET_KIND_SFT,
            parent_version_ids=[seed.id],
            labels={
                "synthetic_rows": str(synthesis.counts["accepted"]),
                "synth_job_id": job.id,
                "generator": str(synthesis.report["generator"]),
                **_review_labels(synthesis.report.get("review")),
            },
            # every row is pinned (the seed's eval rows to eval, the rest to train): the
            # parent's eval split stays as it was and no synthetic row lands in eval
            split=ingest_pb2.SplitSpec(
                eval_fraction=0.0, seed=task.decoding.seed, pin_by=SPLIT_PIN_FIELD
            ),
        )
        await self.job_event(job, f"curating through ingest job {job.ingest_job_id}")
        since = dt.datetime.fromtimestamp(job.created_at.seconds - 5, tz=dt.UTC)
        waiting = _IngestOutcome(self.context, job.ingest_job_id, since)
        await waiting.start()
        try:
            await self.context.bus.publish(
                subjects.INGEST_DATASET_REQUESTED,
                events_pb2.IngestDatasetRequested(
                    meta=self._meta(job), job_id=job.ingest_job_id, spec=spec
                ),
                key=job.ingest_job_id,
                workspace=job.workspace,
            )
            outcome = await waiting.wait(
                self.context.settings.synth.ingest_timeout_s,
                cancelled=lambda: self.jobs.cancel_requested(job.id),
            )
        finally:
            await waiting.stop()
        if not existed:  # ingest has finished with the rows (it keeps what it curated)
            await self.context.artifacts.delete(source)
        if isinstance(outcome, events_pb2.IngestDatasetRejected):
            raise FailedPrecondition(
                f"ingest job {job.ingest_job_id} rejected the rows: {outcome.error.reason} "
                f"{outcome.error.message}",
                reason="INGEST_REJECTED",
            )
        curated: events_pb2.IngestDatasetCurated = outcome
        return curated


class _IngestOutcome:
    """Ordered consumers on TW_FACTS for one ingest job's curated / rejected fact."""

    def __init__(self, context: ServiceContext[Any], ingest_job_id: str, since: dt.datetime):
        self.context = context
        self.job_id = ingest_job_id
        self.since = since
        self.found: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._subs: list[Any] = []

    async def start(self) -> None:
        for subject in (subjects.INGEST_DATASET_CURATED, subjects.INGEST_DATASET_REJECTED):
            self._subs.append(
                await self.context.bus.js.subscribe(
                    subject,
                    cb=self._on_fact,
                    ordered_consumer=True,
                    config=js_api.ConsumerConfig(
                        deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
                        opt_start_time=self.since,
                    ),
                )
            )

    async def _on_fact(self, msg: Any) -> None:
        event_type = (msg.headers or {}).get(subjects.HEADER_EVENT_TYPE, "")
        try:
            fact = decode_event(event_type, msg.data)
        except InvalidArgument:
            return
        if getattr(fact, "job_id", "") == self.job_id and not self.found.done():
            self.found.set_result(fact)

    async def wait(self, timeout_s: float, *, cancelled: Any) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise DeadlineExceeded(
                    f"ingest job {self.job_id} did not finish in {timeout_s:g} s",
                    reason="INGEST_TIMEOUT",
                )
            try:
                return await asyncio.wait_for(asyncio.shield(self.found), min(left, 1.0))
            except TimeoutError:
                if cancelled():
                    await self._cancel_ingest()
                    raise Cancelled(f"cancelled while ingest job {self.job_id} ran") from None

    async def _cancel_ingest(self) -> None:
        await self.context.bus.publish(
            subjects.INGEST_CONTROL_REQUESTED,
            events_pb2.IngestControlRequested(
                meta=event_meta(producer=PRODUCER),
                job_id=self.job_id,
                action=events_pb2.CONTROL_ACTION_CANCEL,
                reason="the synth job that asked for it was cancelled",
            ),
            key=f"{self.job_id}:cancel",
        )

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()


def _ref_pb(ref: Any) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes or 0, media_type=ref.media_type
    )


def _review_labels(review: Mapping[str, Any] | None) -> dict[str, str]:
    """Labels of a reviewed version: which backend reviewed, and whether people did."""
    if not review:
        return {}
    return {
        "review_backend": str(review["backend"]),
        "review_simulated": str(bool(review["simulated"])).lower(),
    }


def _drops(counts: Mapping[str, int]) -> str:
    drops = {k.removeprefix("filtered_"): v for k, v in counts.items() if k.startswith("filtered_")}
    return ", ".join(f"{k}: {v}" for k, v in sorted(drops.items())) or "nothing generated"
