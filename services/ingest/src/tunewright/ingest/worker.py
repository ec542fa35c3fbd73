"""The ``ingest-worker`` consumer: runs one ingest job per ``tw.ingest.dataset.requested``.

Both paths end here: ``SubmitIngestJob`` / ``CreateDataset`` / ``ImportDataset`` record the
job and publish the request; another system publishes the request itself (the job is then
recorded on arrival). The worker fetches the source from the artifact store, runs
:func:`tunewright.ingest.pipeline.curate` in a thread (progress events as it goes), stores the
outputs, and publishes ``tw.ingest.dataset.curated`` with the dataset version, or
``tw.ingest.dataset.rejected`` with the reason. A redelivered request for a finished job is
acked without running again.

Once a job is over its raw source is deleted, if ingest owns it (its own upload or import put
the bytes into the store, see :mod:`tunewright.ingest.server`) and no queued or running job
reads it. Never otherwise: the artifact store is content-addressed and shared, so a source
named by reference (a registered split being re-ingested, another service's upload, a
pipeline parameter) is someone else's artifact. A service that hands ingest a temporary upload
deletes it itself once ingest is done (the monitor's traffic windows, synth's rows).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.artifacts import ArtifactRef, private_dir, write_private
from tunewright.core.bus import Delivery
from tunewright.core.errors import Cancelled, InvalidArgument, PermanentError, TunewrightError
from tunewright.core.ids import check_job_id
from tunewright.core.service import ServiceContext
from tunewright.events.v1 import events_pb2
from tunewright.ingest import convert
from tunewright.ingest.hashkey import hash_key
from tunewright.ingest.jobs import TERMINAL, JobStore, now_ts
from tunewright.ingest.pii import DatasetScrubber, load_engine
from tunewright.ingest.pipeline import Counts, CurationConfig, curate
from tunewright.ingest.quarantine import QuarantineWriter, purge_expired
from tunewright.ingest.settings import IngestSettings
from tunewright.ingest.terminology import load_glossary
from tunewright.ingest.v1 import ingest_pb2

log = logging.getLogger(__name__)

PRODUCER = f"ingest@{socket.gethostname()}"


def new_job_id(workspace: str, request_id: str = "") -> str:
    if request_id:
        return "ing-" + hashlib.sha256(f"{workspace}\n{request_id}".encode()).hexdigest()[:24]
    return "ing-" + uuid.uuid4().hex[:24]


class IngestWorker:
    def __init__(self, context: ServiceContext[IngestSettings], jobs: JobStore) -> None:
        self.context = context
        self.settings = context.settings
        self.jobs = jobs
        section = self.settings.ingest
        self.glossary = load_glossary(section.glossary_file) if section.glossary_file else {}
        self.hash_key = hash_key(context.settings)
        # sha256 -> the task that deletes that owned source once no job has read it for a while
        self._source_checks: dict[str, asyncio.Task[None]] = {}

    # --- events ---
    def _meta(self, key: str, workspace: str, correlation_id: str | None) -> common_pb2.EventMeta:
        return common_pb2.EventMeta(
            event_id=key,
            occurred_at=now_ts(),
            correlation_id=correlation_id or "",
            workspace=workspace,
            producer=PRODUCER,
        )

    async def job_event(
        self,
        job: ingest_pb2.IngestJob,
        message: str,
        *,
        correlation_id: str | None,
        kind: int = common_pb2.EVENT_KIND_MESSAGE,
        level: int = common_pb2.EVENT_LEVEL_INFO,
        counts: ingest_pb2.CurationCounts | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Store a job event (for StreamIngestJobEvents) and publish it as progress."""
        event = self.jobs.add_event(
            common_pb2.JobEvent(
                job_id=job.id,
                level=level,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
                message=message,
                status=job.status,
                metrics=metrics or {},
            )
        )
        key = f"{job.id}:{event.sequence}"
        await self.context.bus.publish(
            subjects.INGEST_JOB_PROGRESSED,
            events_pb2.IngestJobProgressed(
                meta=self._meta(key, job.workspace, correlation_id),
                job_id=job.id,
                event=event,
                counts=counts,
            ),
            key=key,
            correlation_id=correlation_id,
            workspace=job.workspace,
        )

    async def set_status(
        self, job: ingest_pb2.IngestJob, status: int, reason: str, *, correlation_id: str | None
    ) -> None:
        self.jobs.set_status(job, status, reason)
        await self.job_event(
            job, reason, correlation_id=correlation_id, kind=common_pb2.EVENT_KIND_STATUS
        )

    async def publish_request(self, job: ingest_pb2.IngestJob, correlation_id: str | None) -> None:
        await self.context.bus.publish(
            subjects.INGEST_DATASET_REQUESTED,
            events_pb2.IngestDatasetRequested(
                meta=self._meta(f"{job.id}:requested", job.workspace, correlation_id),
                job_id=job.id,
                spec=job.spec,
            ),
            key=job.id,
            correlation_id=correlation_id,
            workspace=job.workspace,
        )

    # --- the consumer ---
    async def handle(self, delivery: Delivery) -> None:
        request = delivery.decode(events_pb2.IngestDatasetRequested)
        cid = delivery.correlation_id
        check_job_id(request.job_id)  # it names folders (work, quarantine)
        job = self.jobs.find(request.job_id)
        if job is None:  # submitted by another system straight to NATS
            workspace = request.spec.workspace or delivery.workspace or self.settings.workspace
            job = ingest_pb2.IngestJob(
                id=request.job_id,
                workspace=workspace,
                spec=request.spec,
                status=common_pb2.JOB_STATUS_QUEUED,
                created_at=now_ts(),
            )
            job.history.add(status=common_pb2.JOB_STATUS_QUEUED, at=now_ts(), reason="received")
            job, _ = self.jobs.create(job, request_key=None)
        if job.status in TERMINAL:
            # a redelivered request may come with its upload again: raw text must not outlive it
            await self._delete_source(job)
            log.info("request for a finished job acked job_id=%s", job.id)
            return
        if self.jobs.cancel_requested(job.id):
            await self._finish_cancelled(job, cid)
            return
        await self.run(job, cid)

    async def run(self, job: ingest_pb2.IngestJob, cid: str | None) -> None:
        await self.set_status(
            job, common_pb2.JOB_STATUS_RUNNING, "curation started", correlation_id=cid
        )
        section = self.settings.ingest
        work = self.settings.ingest_dir / "work" / job.id
        shutil.rmtree(work, ignore_errors=True)
        private_dir(work)  # the curated dataset, before it is an artifact: owner-only
        quarantine_root = self.settings.ingest_dir / "quarantine"
        try:
            # the file format comes from the spec, else from the content (the store has no names)
            config = convert.curation_config(
                job.spec,
                section,
                self.context.plugins.registries,
                glossary=self.glossary,
                hash_key=self.hash_key,
            )
            source = await self.context.artifacts.get_file(
                convert.ref_from_pb(job.spec.source, "spec.source"), work / "source"
            )
            scrubber = await self._scrubber(config)
            await asyncio.to_thread(
                purge_expired, quarantine_root, section.quarantine_retention_days
            )
            result = await asyncio.to_thread(
                curate,
                source,
                config,
                work_dir=work / "out",
                quarantine=QuarantineWriter(quarantine_root / job.id),
                scrubber=scrubber,
                progress=self._progress_callback(job, cid),
                progress_every=section.progress_every,
                cancelled=lambda: self.jobs.cancel_requested(job.id),
            )
            if result.counts.accepted == 0:
                await self._reject(
                    job,
                    InvalidArgument("no row of the source was accepted", reason="NO_ACCEPTED_ROWS"),
                    cid,
                    counts=convert.counts_to_pb(result.counts),
                )
            elif result.canaries is not None and (gate := result.canaries.gate_error()):
                # the scrubber missed too many planted canaries: no dataset version is published
                await self._reject(job, gate, cid, counts=convert.counts_to_pb(result.counts))
            else:
                await self._publish_curated(job, result, cid)
        except Cancelled:
            await self._finish_cancelled(job, cid)
        except PermanentError as exc:
            await self._reject(job, exc, cid, counts=None)
        except TunewrightError:
            raise  # transient (unavailable, conflict, ...): redelivered with backoff
        except Exception:
            # a bug, not the input's fault: fail the job visibly instead of redelivering it
            log.exception("ingest job failed with an internal error job_id=%s", job.id)
            internal = TunewrightError("internal error while curating (see the service log)")
            await self._reject(job, internal, cid, counts=None)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        await self._delete_source(job)

    async def _delete_source(self, job: ingest_pb2.IngestJob) -> None:
        """The raw upload goes once the job is over (the quarantine keeps the rows that
        failed), if ingest owns it, no other live job reads it, and no job has read it for
        ``delete_sources_after_s`` (requests for it may still sit in the queue)."""
        if not self.settings.ingest.delete_sources or job.status not in TERMINAL:
            return
        try:
            ref = convert.ref_from_pb(job.spec.source, "spec.source")
        except InvalidArgument:
            return
        if not self.jobs.owns_source(ref.sha256):
            log.debug("source kept: not ingest's own upload job_id=%s", job.id)
            return
        self._schedule_source_check(ref.sha256)

    def _schedule_source_check(self, sha256: str) -> None:
        if sha256 in self._source_checks:
            return  # one wait per source; it looks again when it ends

        async def check() -> None:
            try:
                while True:
                    grace = self.settings.ingest.delete_sources_after_s
                    last = self.jobs.source_last_read(sha256)
                    wait = 0.0 if last is None else last + grace - time.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue
                    if not self.jobs.owns_source(sha256):
                        return
                    if self.jobs.source_in_use(sha256, besides=""):
                        return  # that job's end schedules the next look
                    if await self.context.artifacts.delete(ArtifactRef(sha256)):
                        log.info("deleted a raw source no job read for %.0f s", grace)
                    self.jobs.disown_source(sha256)
                    return
            finally:
                self._source_checks.pop(sha256, None)

        self._source_checks[sha256] = asyncio.get_running_loop().create_task(check())

    def sweep_sources(self) -> None:
        """At start: a look at every owned source (waits cut short by a restart). Needs a
        running loop; without one (a test building the consumers only) there is nothing to do."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.settings.ingest.delete_sources:
            for sha256 in self.jobs.owned_sources():
                self._schedule_source_check(sha256)

    async def _scrubber(self, config: CurationConfig) -> DatasetScrubber | None:
        if config.pii is None:
            return None
        recognizers = {
            spec.name: spec.factory for spec in self.context.plugins.registries.pii_recognizers
        }
        engine = await asyncio.to_thread(load_engine, config.pii.nlp_model, recognizers)
        try:
            return DatasetScrubber(engine, config.pii)
        except ValueError as exc:
            raise InvalidArgument(str(exc), reason="INVALID_PII_POLICY") from None

    def _progress_callback(self, job: ingest_pb2.IngestJob, cid: str | None) -> Any:
        loop = asyncio.get_running_loop()

        def progress(counts: Counts, stage: str) -> None:
            snapshot = convert.counts_to_pb(counts)
            coro = self.job_event(
                job,
                f"{stage}: {counts.total} rows read",
                correlation_id=cid,
                kind=common_pb2.EVENT_KIND_METRICS,
                counts=snapshot,
                metrics={"rows_read": float(counts.total), "accepted": float(counts.accepted)},
            )
            asyncio.run_coroutine_threadsafe(coro, loop)

        return progress

    async def _publish_curated(
        self, job: ingest_pb2.IngestJob, result: Any, cid: str | None
    ) -> None:
        store = self.context.artifacts
        refs = {}
        for name in (
            "train.parquet",
            "eval.parquet",
            "train.jsonl",
            "eval.jsonl",
            "pii_audit.json",
            "row_log.jsonl",
        ):
            refs[name] = await store.put_file(result.files[name], convert.media_type_for(name))
            # the same bytes as an upload ingest owns: now a dataset artifact, never deleted
            self.jobs.disown_source(refs[name].sha256)
        # the report names the artifacts it describes (the row log holds every row's fate)
        report = dict(result.report)
        report["artifacts"] = {name: ref.uri for name, ref in refs.items()}
        report_path: Path = result.files["report.json"]
        await asyncio.to_thread(
            write_private, report_path, json.dumps(report, indent=2, sort_keys=True)
        )
        refs["report.json"] = await store.put_file(report_path, "application/json")
        self.jobs.disown_source(refs["report.json"].sha256)
        version = convert.dataset_version(
            job_id=job.id, spec=job.spec, workspace=job.workspace, result=result, refs=refs
        )
        counts = convert.counts_to_pb(result.counts)
        self.jobs.set_result(job.id, pii_audit=version.pii_audit, dataset_version=version)
        job.counts.CopyFrom(counts)
        job.dataset_version_id = version.id
        job.curation_report.CopyFrom(version.curation_report)
        await self.context.bus.publish(
            subjects.INGEST_DATASET_CURATED,
            events_pb2.IngestDatasetCurated(
                meta=self._meta(f"{job.id}:curated", job.workspace, cid),
                job_id=job.id,
                dataset_version=version,
                counts=counts,
            ),
            key=job.id,
            correlation_id=cid,
            workspace=job.workspace,
        )
        await self.set_status(
            job,
            common_pb2.JOB_STATUS_SUCCEEDED,
            f"dataset version {version.id}",
            correlation_id=cid,
        )
        log.info(
            "ingest job succeeded job_id=%s dataset_version=%s total_count=%d accepted_count=%d",
            job.id,
            version.id,
            result.counts.total,
            result.counts.accepted,
        )

    async def _reject(
        self,
        job: ingest_pb2.IngestJob,
        exc: TunewrightError,
        cid: str | None,
        *,
        counts: ingest_pb2.CurationCounts | None,
    ) -> None:
        error = common_pb2.ErrorDetail(
            reason=exc.reason,
            message=exc.message,
            field_violations=[
                common_pb2.FieldViolation(field=v.field, description=v.description)
                for v in exc.field_violations
            ],
            retryable=exc.retryable,
        )
        job.error.CopyFrom(error)
        await self.context.bus.publish(
            subjects.INGEST_DATASET_REJECTED,
            events_pb2.IngestDatasetRejected(
                meta=self._meta(f"{job.id}:rejected", job.workspace, cid),
                job_id=job.id,
                error=error,
                counts=counts,
            ),
            key=job.id,
            correlation_id=cid,
            workspace=job.workspace,
        )
        status = (
            common_pb2.JOB_STATUS_CANCELLED
            if exc.reason == "CANCELLED"
            else common_pb2.JOB_STATUS_FAILED
        )
        await self.set_status(job, status, f"{exc.reason}: {exc.message}", correlation_id=cid)
        log.warning("ingest job rejected job_id=%s reason=%s", job.id, exc.reason)

    async def _finish_cancelled(self, job: ingest_pb2.IngestJob, cid: str | None) -> None:
        await self._reject(
            job, Cancelled("ingest job cancelled", reason="CANCELLED"), cid, counts=None
        )
