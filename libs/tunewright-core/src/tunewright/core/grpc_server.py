"""gRPC server kit: every tunewright server is built here, the same way.

A server gets, in order: the correlation-id interceptor, bearer-token auth (when
``GrpcSettings.auth_token`` is set), and the domain-error interceptor
(:mod:`tunewright.core.interceptors`); the library health servicer (``grpc.health.v1``);
reflection for every registered service plus health and reflection; TLS when a cert and key
are configured; a loopback bind unless told otherwise. Shape after grpc's own examples::

    def register(server: grpc.aio.Server) -> list[str]:
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(IngestServicer(...), server)
        return [ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name]

    handle = build_server(settings=settings.grpc, register=register)  # health: NOT_SERVING
    await handle.start()                       # health: SERVING
    await serve_until_signalled(handle)        # SIGTERM/SIGINT -> NOT_SERVING -> graceful stop

Tests that only need a server and its port use ``server, port = create_server(...)``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tunewright.core.identities import load_identities
from tunewright.core.interceptors import (
    BearerAuthInterceptor,
    CorrelationInterceptor,
    ErrorInterceptor,
)
from tunewright.core.settings import GrpcSettings

__all__ = [
    "DEFAULT_ADDRESS",
    "Registrar",
    "ServerHandle",
    "build_server",
    "create_server",
    "serve_until_signalled",
]

DEFAULT_ADDRESS: Final = "127.0.0.1:0"
#: adds servicers to the server and returns their full service names
#: (``"tunewright.ingest.v1.IngestService"``) for health and reflection
Registrar = Callable[[Any], Iterable[str]]

_DEFAULT_OPTIONS: Final = (
    # grpc turns SO_REUSEPORT on by default: a second server would then share a busy port
    # silently instead of failing to bind
    ("grpc.so_reuseport", 0),
)


class _HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # untyped library
    """The library servicer, but starting from a chosen status instead of SERVING.

    The library reports the server as a whole ("") SERVING from construction: a load
    balancer could route to a server whose consumers and stores are not ready yet.
    """

    def __init__(self, names: Iterable[str], status: Any) -> None:
        super().__init__()
        # no Watch can be open before the server starts, so setting the map directly is
        # safe (set() is async and build_server is not)
        for name in ("", *names):
            self._server_status[name] = status


@dataclass
class ServerHandle:
    """A built server with what it takes to run it: port, health, service names."""

    server: Any  # grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    #: registered service names (health and reflection are not included)
    services: tuple[str, ...]
    grace_period_s: float = 5.0
    tls: bool = False
    started: bool = field(default=False, init=False)

    async def start(self) -> None:
        """Start serving and report SERVING for the server and every registered service."""
        await self.server.start()
        self.started = True
        await self.set_serving(True)

    async def set_serving(self, serving: bool, *, service: str | None = None) -> None:
        """Report ``service`` (default: the server as a whole and every service) up or down."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        names = (service,) if service is not None else ("", *self.services)
        for name in names:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING for all, then stop; in-flight calls get ``grace`` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_period_s if grace is None else grace)


def build_server(
    addr: str | None = None,
    *,
    settings: GrpcSettings | None = None,
    register: Registrar | Sequence[Registrar] = (),
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> ServerHandle:
    """Build (not start) a grpc.aio server; bind ``addr``, else ``settings``' host:port.

    Health reports NOT_SERVING for the server ("") and every registered service until
    :meth:`ServerHandle.start` (or :meth:`ServerHandle.set_serving`) says otherwise.
    ``interceptors`` run innermost, so what they raise is mapped like handler errors.
    Raises ``RuntimeError`` when the address cannot be bound.
    """
    return _build(
        addr,
        settings=settings,
        register=register,
        interceptors=interceptors,
        options=options,
        initial_status=health_pb2.HealthCheckResponse.NOT_SERVING,
    )


def _build(
    addr: str | None,
    *,
    settings: GrpcSettings | None,
    register: Registrar | Sequence[Registrar],
    interceptors: Sequence[Any],
    options: Sequence[tuple[str, Any]],
    initial_status: Any,
) -> ServerHandle:
    settings = settings or GrpcSettings()
    address = addr or settings.address
    chain: list[Any] = [CorrelationInterceptor()]
    if settings.auth_token is not None:
        identities = load_identities(settings.identities_file) if settings.identities_file else None
        chain.append(BearerAuthInterceptor(settings.auth_token.get_secret_value(), identities))
    chain.append(ErrorInterceptor())
    chain.extend(interceptors)
    server = grpc.aio.server(interceptors=chain, options=[*_DEFAULT_OPTIONS, *options])

    registrars = [register] if callable(register) else list(register)
    services: list[str] = []
    for registrar in registrars:
        services.extend(registrar(server))

    health_servicer = _HealthServicer(services, initial_status)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    port = _bind(server, address, settings)
    return ServerHandle(
        server=server,
        port=port,
        health=health_servicer,
        services=tuple(services),
        grace_period_s=settings.grace_period_s,
        tls=settings.tls,
    )


def create_server(
    addr: str | None = None,
    *,
    settings: GrpcSettings | None = None,
    register: Registrar | Sequence[Registrar] = (),
) -> tuple[Any, int]:
    """``(server, port)`` like grpc's examples; see :func:`build_server` for the handle.

    This shape has no handle to report health with, so, like the library servicer, it
    reports the server ("") and every registered service SERVING as soon as it runs.
    Services use :func:`build_server`, which stays NOT_SERVING until started.
    """
    handle = _build(
        addr,
        settings=settings,
        register=register,
        interceptors=(),
        options=(),
        initial_status=health_pb2.HealthCheckResponse.SERVING,
    )
    return handle.server, handle.port


def _bind(server: Any, address: str, settings: GrpcSettings) -> int:
    try:
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind gRPC server to {address}: {exc}") from exc
    if not port:
        raise RuntimeError(f"cannot bind gRPC server to {address}")
    return int(port)


async def serve_until_signalled(
    handle: ServerHandle,
    *,
    grace: float | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or ``stop`` is set), then shut down gracefully.

    Starts the server if it has not been started. On the signal: health goes NOT_SERVING
    for every service, then ``server.stop(grace)`` lets in-flight calls finish for up to
    ``grace`` seconds (default ``GrpcSettings.grace_period_s``) before cancelling them.
    """
    if not handle.started:
        await handle.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    await handle.stop(grace)
