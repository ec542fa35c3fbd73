"""A small client of the registry's gRPC API for services that read from it (the evaluator,
synth, monitor, serve): model versions (by id, name + version or alias), dataset versions,
training runs, aliases. A missing entity is a NotFound; an unreachable registry a
FailedPrecondition.

It carries the platform's credentials the way the servers take them (``GrpcSettings``): the
bearer token on every call, and TLS when the service itself serves TLS (its certificate is the
trust root: one platform certificate, as ``compose/setup.sh`` makes it). Without them a stack
with auth on would lock its own services out of the registry."""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import FailedPrecondition, NotFound
from tunewright.core.settings import GrpcSettings
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc


class VersionLookup(Protocol):
    """What services read from the registry: :class:`RegistryClient` implements it; domain
    code depends on this, so tests can hand in a registry of their own."""

    async def model_version(
        self, ref: common_pb2.ModelVersionRef, workspace: str
    ) -> registry_pb2.ModelVersion: ...
    async def dataset_version(
        self, ref: common_pb2.DatasetVersionRef, workspace: str
    ) -> registry_pb2.DatasetVersion: ...


class RegistryClient:
    def __init__(self, address: str, grpc_settings: GrpcSettings | None = None) -> None:
        self.address = address
        self._channel: Any = None
        settings = grpc_settings or GrpcSettings()
        token = settings.outgoing_token
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token.get_secret_value()}"),) if token is not None else ()
        )
        self._root_cert: bytes | None = (
            settings.tls_cert_file.read_bytes() if settings.tls_cert_file is not None else None
        )

    def _stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        if self._channel is None:
            if self._root_cert is None:
                self._channel = grpc.aio.insecure_channel(self.address)
            else:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._root_cert)
                self._channel = grpc.aio.secure_channel(self.address, credentials)
        return registry_pb2_grpc.RegistryServiceStub(self._channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(exc.details() or "not found", reason="NOT_IN_REGISTRY") from None
            raise FailedPrecondition(
                f"registry at {self.address} answered {exc.code().name}",
                reason="REGISTRY_UNAVAILABLE",
            ) from None

    async def model_version(
        self, ref: common_pb2.ModelVersionRef, workspace: str
    ) -> registry_pb2.ModelVersion:
        reply = await self._call(
            self._stub().GetModelVersion,
            registry_pb2.GetModelVersionRequest(ref=ref, workspace=workspace),
        )
        return reply.model_version  # type: ignore[no-any-return]

    async def dataset_version(
        self, ref: common_pb2.DatasetVersionRef, workspace: str
    ) -> registry_pb2.DatasetVersion:
        reply = await self._call(
            self._stub().GetDatasetVersion,
            registry_pb2.GetDatasetVersionRequest(ref=ref, workspace=workspace),
        )
        return reply.dataset_version  # type: ignore[no-any-return]

    async def aliases(self, workspace: str) -> list[registry_pb2.AliasAssignment]:
        """Every alias assignment of the workspace (the serve service lists them as models)."""
        reply = await self._call(
            self._stub().ListAliases, registry_pb2.ListAliasesRequest(workspace=workspace)
        )
        return list(reply.aliases)

    async def training_run(self, run_id: str) -> registry_pb2.TrainingRun | None:
        try:
            reply = await self._call(
                self._stub().GetTrainingRun, registry_pb2.GetTrainingRunRequest(run_id=run_id)
            )
        except NotFound:
            return None
        return reply.run  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
