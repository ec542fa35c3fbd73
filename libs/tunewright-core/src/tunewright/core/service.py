"""Service kit: what every tunewright service process does, written once.

A service declares a :class:`ServiceDefinition` (its settings class, its gRPC servicers, its
NATS consumers) and calls :func:`main`. The kit then, in order: loads settings (unknown keys
are errors), configures JSON logging, loads plugins (a broken plugin stops start-up with its
name), connects to NATS and declares the catalog's streams and consumers, opens the artifact
store chosen by ``artifacts.backend`` (itself a plugin), starts the gRPC server (health +
reflection), starts the consumers, reports SERVING, and on SIGTERM/SIGINT: NOT_SERVING, stop
consuming (in-flight handlers finish and ack), stop gRPC gracefully, drain NATS.

Services stay thin: servicers convert pb <-> domain and call domain code, handlers decode an
event and call domain code; neither imports another service.

Work a service cannot do yet is refused with :class:`NotImplementedYet`: the bus dead-letters
the request with that reason (kept in TW_DLQ, never acked away), and a pipeline stage waiting
for it fails with DEAD_LETTERED.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tunewright.core import model_cache
from tunewright.core.artifacts import ArtifactStore
from tunewright.core.bus import Delivery, EventBus, Subscription
from tunewright.core.errors import PermanentError
from tunewright.core.grpc_server import ServerHandle, build_server
from tunewright.core.logs import configure_logging
from tunewright.core.plugins import PluginError, PluginManager
from tunewright.core.settings import SettingsError, TunewrightSettings, load_settings

__all__ = [
    "Consumer",
    "GrpcBinding",
    "NotImplementedYet",
    "RunningService",
    "ServiceContext",
    "ServiceDefinition",
    "main",
    "start_service",
]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=TunewrightSettings)
Handler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GrpcBinding:
    """One gRPC service to serve: the generated ``add_XServicer_to_server`` and an instance."""

    add_to_server: Callable[[Any, Any], None]
    servicer: object
    #: full service name, e.g. ``tunewright.ingest.v1.IngestService`` (health + reflection)
    service_name: str


@dataclass(frozen=True, slots=True)
class Consumer:
    """A handler bound to a durable declared in :mod:`tunewright.core.catalog`."""

    durable: str
    handler: Handler
    concurrency: int = 1


@dataclass(slots=True)
class ServiceContext(Generic[S]):
    """What a service's servicers and handlers get: settings, bus, plugins, artifacts."""

    settings: S
    bus: EventBus
    plugins: PluginManager
    artifacts: ArtifactStore
    #: objects the service builds once and shares between servicers, consumers and loops
    resources: dict[str, Any] = field(default_factory=dict)
    #: called (newest first) after consumers, loops and gRPC have stopped, before NATS closes
    closers: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ServiceDefinition(Generic[S]):
    name: str
    settings_cls: type[S]
    grpc: Callable[[ServiceContext[S]], Sequence[GrpcBinding]]
    consumers: Callable[[ServiceContext[S]], Sequence[Consumer]] = field(default=lambda _ctx: ())
    #: long-running loops (e.g. an outbox publisher) started after the consumers and cancelled
    #: at shutdown; one that raises turns health NOT_SERVING (orchestrators then restart it)
    background: Callable[[ServiceContext[S]], Sequence[Callable[[], Awaitable[None]]]] = field(
        default=lambda _ctx: ()
    )


@dataclass(slots=True)
class RunningService(Generic[S]):
    definition: ServiceDefinition[S]
    context: ServiceContext[S]
    server: ServerHandle
    subscriptions: list[Subscription]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_watch: Callable[[], Awaitable[None]] | None = None

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self) -> None:
        """NOT_SERVING, stop consuming (in-flight handlers finish), stop gRPC, drain NATS."""
        await self.server.set_serving(False)
        # in-flight handlers get the gRPC grace period, then their messages go back (nak)
        grace = self.context.settings.grpc.grace_period_s
        for sub in self.subscriptions:
            await sub.stop(timeout_s=grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.stop()
        for close in reversed(self.context.closers):
            close()
        if self.stop_watch is not None:
            await self.stop_watch()
        await self.context.bus.close()
        log.info("service stopped service=%s", self.definition.name)


class NotImplementedYet(PermanentError):
    """Work this version of a service cannot do; the message goes to the dead-letter stream."""

    code = "UNIMPLEMENTED"


async def start_service(definition: ServiceDefinition[S], settings: S) -> RunningService[S]:
    """Start everything a service runs; returns once it reports SERVING."""
    model_cache.use_data_dir(settings.data_dir)
    plugins = PluginManager()
    registries = plugins.load(disabled=settings.plugins.disabled)
    bus = await EventBus.from_settings(
        settings.nats, name=f"{definition.name}@{settings.workspace}"
    )
    try:
        await bus.declare()
        store_factory = registries.artifact_stores.get(settings.artifacts.backend).factory
        artifacts = store_factory(root=settings.artifacts_root, js=bus.js)
        if not isinstance(artifacts, ArtifactStore):
            raise TypeError(
                f"artifact store plugin {settings.artifacts.backend!r} returned "
                f"{type(artifacts).__name__}, not an ArtifactStore"
            )
        context = ServiceContext(settings=settings, bus=bus, plugins=plugins, artifacts=artifacts)
        bindings = definition.grpc(context)

        def register(server: Any) -> list[str]:
            for binding in bindings:
                binding.add_to_server(binding.servicer, server)
            return [binding.service_name for binding in bindings]

        server = build_server(settings=settings.grpc, register=register)
        await server.server.start()
        server.started = True
    except BaseException:
        await bus.close()
        raise
    try:
        subscriptions = [
            await bus.consume(c.durable, c.handler, concurrency=c.concurrency)
            for c in definition.consumers(context)
        ]
    except BaseException:
        await server.server.stop(0)
        await bus.close()
        raise
    # a consumer that dies on a message's last delivery cannot dead-letter it; this does
    stop_watch = await bus.watch_max_deliveries()
    tasks = [
        asyncio.create_task(
            _supervised(definition.name, loop, server), name=f"{definition.name}-background"
        )
        for loop in definition.background(context)
    ]
    await server.set_serving(True)
    plugins.service_started(service=definition.name, settings=settings.model_dump(mode="json"))
    log.info(
        "service serving service=%s port=%s consumers=%s",
        definition.name,
        server.port,
        len(subscriptions),
    )
    return RunningService(definition, context, server, subscriptions, tasks, stop_watch)


async def _supervised(
    service: str, loop: Callable[[], Awaitable[None]], server: ServerHandle
) -> None:
    """Run a background loop; if it dies, the service stops claiming to be healthy."""
    try:
        await loop()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.error(
            "background task failed; reporting NOT_SERVING service=%s", service, exc_info=True
        )
        await server.set_serving(False)


async def run_service(
    definition: ServiceDefinition[S], settings: S, *, stop: asyncio.Event | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then shut down gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # installed before start-up, so a signal that arrives while starting still stops cleanly
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        running = await start_service(definition, settings)
        try:
            await stop.wait()
        finally:
            await running.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(definition: ServiceDefinition[Any], argv: Sequence[str] | None = None) -> int:
    """Console entry point of a service: ``tunewright-<name> [--config FILE]``."""
    parser = argparse.ArgumentParser(prog=f"tunewright-{definition.name}")
    parser.add_argument("--config", type=Path, help="YAML settings file (else $TW_CONFIG)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(definition.settings_cls, args.config, service_name=definition.name)
    except SettingsError as exc:
        print(f"tunewright-{definition.name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        service=definition.name, level=settings.log.level, json=settings.log.json_format
    )
    try:
        asyncio.run(run_service(definition, settings))
    except PluginError as exc:
        log.error("start-up failed: %s", exc)
        print(f"tunewright-{definition.name}: {exc}", file=sys.stderr)
        return 2
    return 0
