"""Pipeline commands of the CLI: submit a pipeline YAML to the registry, follow it, list runs,
show a run's events, cancel a run. The registry owns pipelines; this is a gRPC client of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewright.cli.stack import Probe, StackSettings
from tunewright.common.v1 import common_pb2
from tunewright.core.interceptors import error_details
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

STATUS = {
    value: name.removeprefix("JOB_STATUS_").lower() for name, value in common_pb2.JobStatus.items()
}


class PipelineError(RuntimeError):
    """A pipeline request the registry refused, with its field-level reasons."""


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    status: str
    model_version_id: str
    failed_stage: str
    error: str
    stages: tuple[tuple[str, str, str, Mapping[str, str]], ...]  # name, kind, status, outputs


class RegistryClient:
    def __init__(self, settings: StackSettings, address: str | None = None) -> None:
        probe = Probe.from_settings(settings.grpc)
        self._metadata = probe.metadata
        if address:
            self._channel = probe.channel_to(address)
        else:
            self._channel = probe.channel(settings.stack.ports["registry"])
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self.workspace = settings.workspace

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., object], request: object) -> object:
        try:
            return method(request, metadata=self._metadata, timeout=30)
        except grpc.RpcError as exc:
            raise _refusal(exc) from None

    def submit(self, spec_file: Path, parameters: Mapping[str, str], request_id: str = "") -> str:
        try:
            spec_yaml = spec_file.read_text()
        except OSError as exc:
            raise PipelineError(f"{spec_file}: {exc.strerror}") from None
        return self.submit_yaml(spec_yaml, parameters, request_id)

    def submit_yaml(
        self,
        spec_yaml: str,
        parameters: Mapping[str, str] | None = None,
        request_id: str = "",
        requested_by: str = "cli",
    ) -> str:
        reply = self._call(
            self._stub.SubmitPipelineRun,
            registry_pb2.SubmitPipelineRunRequest(
                workspace=self.workspace,
                spec_yaml=spec_yaml,
                parameters=dict(parameters or {}),
                request_id=request_id,
                requested_by=requested_by,
            ),
        )
        assert isinstance(reply, registry_pb2.SubmitPipelineRunResponse)
        return reply.run.id

    def events(
        self, run_id: str, *, after: int = 0
    ) -> Iterator[registry_pb2.StreamPipelineRunEventsResponse]:
        """The run's events so far, then live ones until the run ends."""
        request = registry_pb2.StreamPipelineRunEventsRequest(run_id=run_id, after_sequence=after)
        try:
            yield from self._stub.StreamPipelineRunEvents(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _refusal(exc) from None

    def summary(self, run_id: str) -> RunSummary:
        reply = self._call(
            self._stub.GetPipelineRun, registry_pb2.GetPipelineRunRequest(run_id=run_id)
        )
        assert isinstance(reply, registry_pb2.GetPipelineRunResponse)
        return _summary(reply.run)

    def stage_jobs(self, run_id: str) -> dict[str, str]:
        """job id -> stage name, for the run's stages that ask a service for a job."""
        reply = self._call(
            self._stub.GetPipelineRun, registry_pb2.GetPipelineRunRequest(run_id=run_id)
        )
        assert isinstance(reply, registry_pb2.GetPipelineRunResponse)
        return {s.job_id: s.name for s in reply.run.stages if s.job_id}

    def runs(self, limit: int) -> list[RunSummary]:
        reply = self._call(
            self._stub.ListPipelineRuns,
            registry_pb2.ListPipelineRunsRequest(
                workspace=self.workspace, page=common_pb2.PageRequest(page_size=limit)
            ),
        )
        assert isinstance(reply, registry_pb2.ListPipelineRunsResponse)
        return [_summary(run) for run in reply.runs]

    def cancel(self, run_id: str, reason: str) -> RunSummary:
        reply = self._call(
            self._stub.CancelPipelineRun,
            registry_pb2.CancelPipelineRunRequest(run_id=run_id, reason=reason),
        )
        assert isinstance(reply, registry_pb2.CancelPipelineRunResponse)
        return _summary(reply.run)

    def run(self, run_id: str) -> registry_pb2.PipelineRun:
        reply = self._call(
            self._stub.GetPipelineRun, registry_pb2.GetPipelineRunRequest(run_id=run_id)
        )
        assert isinstance(reply, registry_pb2.GetPipelineRunResponse)
        return reply.run

    def dataset_version(self, dataset_version_id: str) -> registry_pb2.DatasetVersion:
        reply = self._call(
            self._stub.GetDatasetVersion,
            registry_pb2.GetDatasetVersionRequest(
                ref=common_pb2.DatasetVersionRef(id=dataset_version_id)
            ),
        )
        assert isinstance(reply, registry_pb2.GetDatasetVersionResponse)
        return reply.dataset_version

    def evaluation(self, evaluation_id: str) -> registry_pb2.Evaluation:
        reply = self._call(
            self._stub.GetEvaluation, registry_pb2.GetEvaluationRequest(evaluation_id=evaluation_id)
        )
        assert isinstance(reply, registry_pb2.GetEvaluationResponse)
        return reply.evaluation

    def model_version(self, ref: str | common_pb2.ModelVersionRef) -> registry_pb2.ModelVersion:
        """By id, or by a ref (``model`` + ``alias``)."""
        if isinstance(ref, str):
            ref = common_pb2.ModelVersionRef(id=ref)
        reply = self._call(
            self._stub.GetModelVersion,
            registry_pb2.GetModelVersionRequest(ref=ref, workspace=self.workspace),
        )
        assert isinstance(reply, registry_pb2.GetModelVersionResponse)
        return reply.model_version

    def training_run(self, run_id: str) -> registry_pb2.TrainingRun:
        reply = self._call(
            self._stub.GetTrainingRun, registry_pb2.GetTrainingRunRequest(run_id=run_id)
        )
        assert isinstance(reply, registry_pb2.GetTrainingRunResponse)
        return reply.run

    def lineage(self, model_version_id: str) -> registry_pb2.GetLineageResponse:
        reply = self._call(
            self._stub.GetLineage,
            registry_pb2.GetLineageRequest(
                workspace=self.workspace, model=common_pb2.ModelVersionRef(id=model_version_id)
            ),
        )
        assert isinstance(reply, registry_pb2.GetLineageResponse)
        return reply


def _refusal(exc: grpc.RpcError) -> PipelineError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return PipelineError(f"registry unreachable ({details}); is the stack up? `tunewright up`")
    reason, violations = error_details(exc)
    lines = [f"{details}" + (f" [{reason}]" if reason else "")]
    lines += [f"  {v.field}: {v.description}" for v in violations]
    return PipelineError("\n".join(lines))


def _summary(run: registry_pb2.PipelineRun) -> RunSummary:
    failed = next(
        (s.name for s in run.stages if STATUS.get(s.status) in ("failed", "cancelled")), ""
    )
    return RunSummary(
        run_id=run.id,
        name=run.name,
        status=STATUS.get(run.status, "unknown"),
        model_version_id=run.model_version_id,
        failed_stage=failed,
        error=run.error.message,
        stages=tuple(
            (s.name, s.kind, STATUS.get(s.status, "unknown"), dict(s.outputs)) for s in run.stages
        ),
    )


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"parameter {pair!r} must look like name=value")
        out[key] = value
    return out


def upload(
    address: str, path: Path, *, probe: Probe | None = None, chunk_bytes: int = 1 << 20
) -> str:
    """Stream ``path`` to the ingest service (UploadDataset); returns the artifact URI.
    ``probe``: the TLS root and bearer token to call it with (the CLI's settings)."""
    from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc

    size = path.stat().st_size

    def requests() -> Iterator[ingest_pb2.UploadDatasetRequest]:
        yield ingest_pb2.UploadDatasetRequest(
            header=ingest_pb2.UploadHeader(filename=path.name, size_bytes=size)
        )
        with path.open("rb") as source:
            while chunk := source.read(chunk_bytes):
                yield ingest_pb2.UploadDatasetRequest(chunk=chunk)

    probe = probe or Probe()
    with probe.channel_to(address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            reply = stub.UploadDataset(requests(), timeout=600, metadata=probe.metadata)
        except grpc.RpcError as exc:
            raise _refusal(exc) from None
    return str(reply.artifact.uri)
