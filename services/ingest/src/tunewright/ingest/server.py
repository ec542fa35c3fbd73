"""The ingest service process: ``tunewright-ingest`` or ``python -m tunewright.ingest.server``.

gRPC (``tunewright.ingest.v1.IngestService``): upload, create (upload + curate), import,
submit, get, list, cancel, stream events, curation report. Every way to start a job records it
and publishes ``tw.ingest.dataset.requested``; the ``ingest-worker`` consumer
(:mod:`tunewright.ingest.worker`) does the work, exactly as for a request another system
publishes. The servicer is thin: pb -> domain (:mod:`tunewright.ingest.convert`) -> pb;
domain errors become status codes in the core's error interceptor.

An upload or a ``file://`` import whose content was not in the artifact store yet is owned by
ingest (recorded in the job store): the raw bytes are deleted once no job needs them. A source
given by reference (``tw-artifact:``), or an upload of bytes the store already had (a
registered split, another service's file), belongs to someone else and is never deleted here.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tunewright.common.v1 import common_pb2
from tunewright.core.artifacts import ArtifactRef, open_private, private_dir
from tunewright.core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from tunewright.core.logs import current_correlation_id
from tunewright.core.service import Consumer, GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.ingest import convert
from tunewright.ingest.jobs import TERMINAL, JobStore, now_ts
from tunewright.ingest.settings import IngestSettings
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tunewright.ingest.worker import IngestWorker, new_job_id

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
_STREAM_POLL_S = 0.2


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self, context: ServiceContext[IngestSettings], jobs: JobStore, worker: IngestWorker
    ) -> None:
        self.ctx = context
        self.settings = context.settings
        self.jobs = jobs
        self.worker = worker

    # --- uploads ---
    async def _receive(
        self, header: ingest_pb2.UploadHeader, chunks: AsyncIterator[bytes]
    ) -> tuple[ArtifactRef, int]:
        limit = self.settings.ingest.max_upload_bytes
        uploads = private_dir(self.settings.ingest_dir / "uploads")  # raw rows: owner-only
        path = uploads / uuid.uuid4().hex
        digest, size = hashlib.sha256(), 0
        try:
            with open_private(path, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise InvalidArgument(
                            f"upload exceeds the {limit}-byte limit", reason="UPLOAD_TOO_LARGE"
                        )
                    digest.update(chunk)
                    f.write(chunk)
            if header.size_bytes and header.size_bytes != size:
                raise InvalidArgument(
                    f"upload has {size} bytes, header says {header.size_bytes}",
                    reason="UPLOAD_SIZE_MISMATCH",
                )
            if header.sha256 and header.sha256.lower() != digest.hexdigest():
                raise InvalidArgument(
                    "upload sha256 differs from the header's", reason="UPLOAD_HASH_MISMATCH"
                )
            media = header.media_type or convert.media_type_for(header.filename)
            ref = await self._put_owned(path, media, digest.hexdigest())
        finally:
            path.unlink(missing_ok=True)
        return ref, size

    async def _put_owned(self, path: Path, media_type: str, sha256: str) -> ArtifactRef:
        """Store raw source bytes; ingest owns them only if this put created the artifact."""
        existed = await self.ctx.artifacts.exists(ArtifactRef(sha256))
        ref = await self.ctx.artifacts.put_file(path, media_type)
        if not existed:
            self.jobs.claim_source(ref.sha256)
        return ref

    @staticmethod
    async def _chunks(requests: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        async for request in requests:
            if request.WhichOneof("payload") != "chunk":
                raise InvalidArgument(
                    "only the first message may be a header", reason="BAD_UPLOAD_STREAM"
                )
            yield request.chunk

    async def _first(self, requests: AsyncIterator[Any]) -> Any:
        try:
            first = await anext(aiter(requests))
        except StopAsyncIteration:
            raise InvalidArgument("empty upload stream", reason="BAD_UPLOAD_STREAM") from None
        if first.WhichOneof("payload") != "header":
            raise InvalidArgument(
                "the first message must be the header", reason="BAD_UPLOAD_STREAM"
            )
        return first.header

    async def UploadDataset(
        self, request_iterator: Any, context: Any
    ) -> ingest_pb2.UploadDatasetResponse:
        header = await self._first(request_iterator)
        ref, size = await self._receive(header, self._chunks(request_iterator))
        return ingest_pb2.UploadDatasetResponse(
            artifact=convert.ref_to_pb(ref), bytes_received=size
        )

    async def CreateDataset(
        self, request_iterator: Any, context: Any
    ) -> ingest_pb2.CreateDatasetResponse:
        header = await self._first(request_iterator)
        spec = ingest_pb2.IngestSpec()
        spec.CopyFrom(header.spec)
        self._validate(spec, check_source=False)
        ref, _ = await self._receive(header.upload, self._chunks(request_iterator))
        spec.source.CopyFrom(convert.ref_to_pb(ref))
        if header.upload.filename:
            spec.source.media_type = spec.source.media_type or convert.media_type_for(
                header.upload.filename
            )
        job = await self._submit(spec, header.request_id)
        if job.spec.source.sha256 != ref.sha256 or job.status in TERMINAL:
            await self._discard(ref)  # a repeated request: its job has (had) its own copy
        return ingest_pb2.CreateDatasetResponse(job=job, artifact=spec.source)

    async def ImportDataset(
        self, request: ingest_pb2.ImportDatasetRequest, context: Any
    ) -> ingest_pb2.ImportDatasetResponse:
        spec = ingest_pb2.IngestSpec()
        spec.CopyFrom(request.spec)
        self._validate(spec, check_source=False)
        ref = await self._import(request.source_uri)
        spec.source.CopyFrom(convert.ref_to_pb(ref))
        job = await self._submit(spec, request.request_id)
        if job.spec.source.sha256 != ref.sha256 or job.status in TERMINAL:
            await self._discard(ref)
        return ingest_pb2.ImportDatasetResponse(job=job, artifact=spec.source)

    async def _import(self, uri: str) -> ArtifactRef:
        if uri.startswith("tw-artifact:"):
            ref = convert.ref_from_pb(common_pb2.ArtifactRef(uri=uri), "source_uri")
            if not await self.ctx.artifacts.exists(ref):
                raise NotFound(f"artifact {ref.uri} not found", reason="ARTIFACT_NOT_FOUND")
            return ref
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(
                "source_uri must be tw-artifact:sha256:<hex> or file:///path",
                reason="UNSUPPORTED_SOURCE_URI",
                field_violations=[FieldViolation("source_uri", "unsupported scheme")],
            )
        path, roots = await asyncio.to_thread(
            _resolve, Path(unquote(parsed.path)), self.settings.ingest.import_roots
        )
        if not any(path.is_relative_to(root) for root in roots):
            raise PermissionDenied(
                "file:// imports are allowed only under the configured ingest.import_roots",
                reason="IMPORT_OUTSIDE_ROOTS",
            )
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(f"no file at {uri}", reason="SOURCE_NOT_FOUND")
        return await self._put_owned(
            path, convert.media_type_for(path.name), await asyncio.to_thread(_sha256_of, path)
        )

    async def _discard(self, ref: ArtifactRef) -> None:
        """Drop raw bytes ingest owns and no queued or running job will read (raw rows must
        not linger); anything else in the store is someone else's."""
        if (
            self.settings.ingest.delete_sources
            and self.jobs.owns_source(ref.sha256)
            and not self.jobs.source_in_use(ref.sha256, besides="")
        ):
            await self.ctx.artifacts.delete(ref)
            self.jobs.disown_source(ref.sha256)

    # --- jobs ---
    def _validate(self, spec: ingest_pb2.IngestSpec, *, check_source: bool) -> None:
        if check_source and not (spec.source.uri or spec.source.sha256):
            raise InvalidArgument(
                "spec.source is required",
                field_violations=[FieldViolation("spec.source", "required: upload the file first")],
            )
        convert.curation_config(
            spec,
            self.settings.ingest,
            self.ctx.plugins.registries,
            hash_key=self.worker.hash_key,  # read once, when the worker starts
        )

    async def _submit(self, spec: ingest_pb2.IngestSpec, request_id: str) -> ingest_pb2.IngestJob:
        workspace = spec.workspace or self.settings.workspace
        spec.workspace = workspace
        job = ingest_pb2.IngestJob(
            id=new_job_id(workspace, request_id),
            workspace=workspace,
            spec=spec,
            status=common_pb2.JOB_STATUS_QUEUED,
            created_at=now_ts(),
        )
        job.history.add(status=common_pb2.JOB_STATUS_VALIDATING, at=now_ts(), reason="submitted")
        job.history.add(status=common_pb2.JOB_STATUS_QUEUED, at=now_ts(), reason="spec valid")
        request_key = f"{workspace}\n{request_id}" if request_id else None
        job, created = self.jobs.create(job, request_key=request_key)
        if created:
            await self.worker.publish_request(job, current_correlation_id())
        return job

    async def SubmitIngestJob(
        self, request: ingest_pb2.SubmitIngestJobRequest, context: Any
    ) -> ingest_pb2.SubmitIngestJobResponse:
        spec = ingest_pb2.IngestSpec()
        spec.CopyFrom(request.spec)
        self._validate(spec, check_source=True)
        ref = convert.ref_from_pb(spec.source, "spec.source")
        if not await self.ctx.artifacts.exists(ref):
            raise NotFound(f"source artifact {ref.uri} not found", reason="ARTIFACT_NOT_FOUND")
        return ingest_pb2.SubmitIngestJobResponse(job=await self._submit(spec, request.request_id))

    async def GetIngestJob(
        self, request: ingest_pb2.GetIngestJobRequest, context: Any
    ) -> ingest_pb2.GetIngestJobResponse:
        return ingest_pb2.GetIngestJobResponse(job=self.jobs.get(request.job_id))

    async def ListIngestJobs(
        self, request: ingest_pb2.ListIngestJobsRequest, context: Any
    ) -> ingest_pb2.ListIngestJobsResponse:
        jobs, page = self.jobs.list_page(
            request.workspace or self.settings.workspace, request.statuses, request.page
        )
        return ingest_pb2.ListIngestJobsResponse(jobs=jobs, page=page)

    async def CancelIngestJob(
        self, request: ingest_pb2.CancelIngestJobRequest, context: Any
    ) -> ingest_pb2.CancelIngestJobResponse:
        job = self.jobs.request_cancel(request.job_id)
        if job.status == common_pb2.JOB_STATUS_QUEUED:
            # not started: the worker acks its request without running it
            await self.worker.set_status(
                job, common_pb2.JOB_STATUS_CANCELLED, request.reason or "cancelled",
                correlation_id=current_correlation_id(),
            )  # fmt: skip
        return ingest_pb2.CancelIngestJobResponse(job=self.jobs.get(job.id))

    async def StreamIngestJobEvents(
        self, request: ingest_pb2.StreamIngestJobEventsRequest, context: Any
    ) -> AsyncIterator[ingest_pb2.StreamIngestJobEventsResponse]:
        async for event in self.jobs.follow_events(
            request.job_id, request.after_sequence, poll_s=_STREAM_POLL_S
        ):
            yield ingest_pb2.StreamIngestJobEventsResponse(event=event)

    async def GetCurationReport(
        self, request: ingest_pb2.GetCurationReportRequest, context: Any
    ) -> ingest_pb2.GetCurationReportResponse:
        job = self.jobs.get(request.job_id)
        audit, _version = self.jobs.result(job.id)
        if audit is None:
            raise FailedPrecondition(
                f"ingest job {job.id} has no curation report (status {common_pb2.JobStatus.Name(job.status)})",
                reason="REPORT_NOT_READY",
            )
        return ingest_pb2.GetCurationReportResponse(
            counts=job.counts, report=job.curation_report, pii_audit=audit
        )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve(path: Path, roots: list[Path]) -> tuple[Path, list[Path]]:
    """Symlinks and ``..`` resolved, so a path cannot escape its import root."""
    return path.resolve(), [root.resolve() for root in roots]


class _Wiring:
    """The servicer and the worker of one service context share a job store and a worker.

    The service kit builds servicers and consumers from the context in two calls; this keeps
    what the first call made for the second. Entries hold their context, so an id is never
    reused for another context while its entry exists.
    """

    def __init__(self) -> None:
        self._by_context: dict[
            int, tuple[ServiceContext[IngestSettings], JobStore, IngestWorker]
        ] = {}

    def get(self, context: ServiceContext[IngestSettings]) -> tuple[JobStore, IngestWorker]:
        entry = self._by_context.get(id(context))
        if entry is None or entry[0] is not context:
            jobs = JobStore(context.settings.ingest_dir / "jobs.sqlite")
            entry = (context, jobs, IngestWorker(context, jobs))
            self._by_context[id(context)] = entry
        return entry[1], entry[2]


_wiring = _Wiring()


def grpc_bindings(context: ServiceContext[IngestSettings]) -> list[GrpcBinding]:
    jobs, worker = _wiring.get(context)
    servicer = IngestServicer(context, jobs, worker)
    return [
        GrpcBinding(ingest_pb2_grpc.add_IngestServiceServicer_to_server, servicer, SERVICE_NAME)
    ]


def consumers(context: ServiceContext[IngestSettings]) -> list[Consumer]:
    _jobs_store, worker = _wiring.get(context)
    # built once at start, in the service's loop: look at the owned sources a restart left
    worker.sweep_sources()
    return [Consumer("ingest-worker", worker.handle)]  # tw.ingest.dataset.requested


DEFINITION = ServiceDefinition(
    name="ingest", settings_cls=IngestSettings, grpc=grpc_bindings, consumers=consumers
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
