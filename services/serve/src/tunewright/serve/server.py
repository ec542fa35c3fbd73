"""The serve service process: ``tunewright-serve`` or ``python -m tunewright.serve.server``.

Registered model versions answer requests:

1. gRPC ``ServeService`` (like every service: health, reflection, the platform's token) and
   the OpenAI-compatible HTTP API (:mod:`tunewright.serve.http`, uvicorn in the same event
   loop) call one :class:`~tunewright.serve.serving.Serving`.
2. A model name resolves through the registry (:mod:`tunewright.serve.models`); the version's
   trained folders come from the artifact store into ``<data_dir>/serve/models``; the backend
   plugin (``serve.backend.name``, ``transformers`` by default) keeps one base and many
   adapters in memory.
3. ``tw.registry.model.promoted`` facts (promotions and rollbacks) re-point aliases this
   process answers for once the new version is loaded; aliases are also re-read every
   ``serve.alias_refresh_s``.
4. Every answer goes to the monitor as a ``tw.traffic.interaction.logged`` event after a short
   grace period for feedback (:mod:`tunewright.serve.interactions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from tunewright.core import subjects
from tunewright.core.bus import UndecodableMessage, decode_event, event_meta
from tunewright.core.errors import InvalidArgument, NotFound, TunewrightError
from tunewright.core.registry_client import RegistryClient
from tunewright.core.service import GrpcBinding, ServiceContext, ServiceDefinition
from tunewright.core.service import main as run_service_main
from tunewright.core.serving import ServingBackend
from tunewright.events.v1 import events_pb2
from tunewright.serve import http
from tunewright.serve.interactions import Interaction, InteractionLog
from tunewright.serve.models import ModelResolver
from tunewright.serve.serving import Completion, SamplingInput, Serving
from tunewright.serve.settings import ServeSettings
from tunewright.serve.v1 import serve_pb2, serve_pb2_grpc

SERVICE_NAME = serve_pb2.DESCRIPTOR.services_by_name["ServeService"].full_name
PRODUCER = "serve"
log = logging.getLogger(__name__)


class ServeApp:
    """What the service builds once: backend, resolver, interaction log, HTTP server."""

    def __init__(self, context: ServiceContext[ServeSettings]) -> None:
        self.context = context
        settings = context.settings.serve
        self.settings = settings
        spec = context.plugins.registries.serving_backends.get(settings.backend.name)
        backend = spec.factory(
            base_models=context.plugins.registries.base_models, **settings.backend.params
        )
        if not isinstance(backend, ServingBackend):
            raise TypeError(
                f"serving backend plugin {settings.backend.name!r} returned "
                f"{type(backend).__name__}, not a ServingBackend"
            )
        self.backend = backend
        self.registry = RegistryClient(settings.registry_address, context.settings.grpc)
        self.resolver = ModelResolver(
            registry=self.registry,
            artifacts=context.artifacts,
            cache_dir=context.settings.data_dir / "serve" / "models",
            prepare=backend.prepare,
            default_alias=settings.default_alias,
            refresh_s=settings.alias_refresh_s,
        )
        self.interactions = (
            InteractionLog(
                self._publish,
                grace_s=settings.traffic.feedback_grace_s,
                max_pending=settings.traffic.max_pending,
            )
            if settings.traffic.enabled
            else None
        )
        self.serving = Serving(
            resolver=self.resolver,
            backend=backend,
            interactions=self.interactions,
            limits=settings.limits,
        )
        self.http_port = 0
        self._socket: socket.socket | None = None

    # --- traffic ----------------------------------------------------------------------------

    async def _publish(self, item: Interaction) -> None:
        event = events_pb2.TrafficInteractionLogged(
            meta=event_meta(producer=PRODUCER, workspace=item.workspace),
            interaction_id=item.interaction_id,
            model_version_id=item.model_version_id,
            prompt=item.prompt,
            response=item.response,
            attributes=dict(item.attributes),
        )
        event.feedback.thumbs = item.thumbs
        event.feedback.escalated = item.escalated
        event.feedback.resolved = item.resolved
        event.at.FromNanoseconds(int(item.at * 1e9))
        await self.context.bus.publish(
            subjects.TRAFFIC_INTERACTION_LOGGED,
            event,
            key=f"{item.workspace}/{item.interaction_id}",
            workspace=item.workspace,
        )

    async def traffic_loop(self) -> None:
        assert self.interactions is not None  # started only when traffic is logged
        try:
            await self.interactions.run()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.interactions.flush())

    # --- promotions -------------------------------------------------------------------------

    async def follow_registry(self) -> None:
        """Every promotion fact, as it is published (a core subscription: each serve process
        sees all of them), plus the periodic re-read of aliases in use."""
        facts: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            facts.put_nowait(msg.data)

        sub = await self.context.bus.nc.subscribe(subjects.REGISTRY_MODEL_PROMOTED, cb=on_message)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(facts.get(), self.settings.alias_refresh_s)
                except TimeoutError:
                    await self._refresh()
                    continue
                try:
                    event = decode_event("tunewright.events.v1.RegistryModelPromoted", data)
                    assert isinstance(event, events_pb2.RegistryModelPromoted)
                except UndecodableMessage:
                    log.warning("undecodable promotion fact ignored")
                    continue
                try:
                    await self.resolver.on_assignment(event.assignment)
                except TunewrightError as exc:
                    log.warning("promotion fact not applied reason=%s", exc.reason)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _refresh(self) -> None:
        try:
            await self.resolver.refresh()
        except TunewrightError as exc:
            log.warning("alias refresh failed reason=%s", exc.reason)

    # --- HTTP -------------------------------------------------------------------------------

    def bind_http(self) -> None:
        """Bind the HTTP socket now, so the port is known (port 0) before serving starts."""
        http_settings = self.settings.http
        family = socket.AF_INET6 if ":" in http_settings.host.strip("[]") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http_settings.host.strip("[]"), http_settings.port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.http_port = int(sock.getsockname()[1])

    async def list_models(self) -> list[dict[str, Any]]:
        workspace = self.context.settings.workspace
        cards: dict[str, dict[str, Any]] = {}
        for a in await self.registry.aliases(workspace):
            name = f"{a.model}:{a.alias}"
            cards[name] = {
                "id": name,
                "object": "model",
                "created": int(a.assigned_at.seconds),
                "owned_by": workspace,
                "model_version_id": a.model_version_id,
            }
        for version_id in self.backend.loaded():
            cards.setdefault(
                version_id,
                {
                    "id": version_id,
                    "object": "model",
                    "created": 0,
                    "owned_by": workspace,
                    "model_version_id": version_id,
                },
            )
        return list(cards.values())

    def api_keys(self) -> list[str]:
        settings = self.context.settings
        keys = [
            s.get_secret_value()
            for s in (settings.serve.http.api_key, settings.grpc.auth_token)
            if s is not None
        ]
        if not keys:
            log.warning("serve HTTP API runs WITHOUT authentication (serve.http.insecure_no_auth)")
        return keys

    async def http_loop(self) -> None:
        import uvicorn

        if self._socket is None:
            self.bind_http()
        app = http.build_app(
            self.serving,
            api_keys=self.api_keys(),
            workspace=self.context.settings.workspace,
            max_body_bytes=self.settings.http.max_body_bytes,
            list_models=self.list_models,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            ssl_certfile=self.settings.http.tls_cert_file,
            ssl_keyfile=self.settings.http.tls_key_file,
            timeout_graceful_shutdown=int(self.context.settings.grpc.grace_period_s) or 1,
        )
        server = _quiet_server(config)
        assert self._socket is not None
        task = asyncio.create_task(server.serve(sockets=[self._socket]))
        log.info("serve HTTP API listening port=%s", self.http_port)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await task
            # the service is stopping (background loops are cancelled before NATS closes)
            await self.close()
            raise

    async def close(self) -> None:
        await self.backend.close()
        await self.registry.close()


def _quiet_server(config: Any) -> Any:
    """uvicorn's Server without its signal handlers: the service kit owns SIGTERM/SIGINT."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


# --- gRPC -----------------------------------------------------------------------------------


def _sampling(params: serve_pb2.SamplingParams) -> SamplingInput:
    return SamplingInput(
        max_tokens=params.max_tokens or None,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        stop=list(params.stop),
        seed=params.seed if params.HasField("seed") else None,
    )


def _messages(request: Any) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in request.messages]


class ServeServicer(serve_pb2_grpc.ServeServiceServicer):
    def __init__(self, app: ServeApp) -> None:
        self.app = app

    def _workspace(self, workspace: str) -> str:
        mine = self.app.context.settings.workspace
        if workspace and workspace != mine:
            raise NotFound(f"this server answers for workspace {mine!r}, not {workspace!r}")
        return mine

    async def _start(self, request: Any) -> Completion:
        if not request.model:
            raise InvalidArgument("model is required")
        return await self.app.serving.start(
            workspace=self._workspace(request.workspace),
            model=request.model,
            sampling=_sampling(request.sampling),
            messages=_messages(request),
            attributes=dict(request.attributes),
        )

    async def ListServedModels(self, request: Any, context: Any) -> Any:
        self._workspace(request.workspace)
        return serve_pb2.ListServedModelsResponse(
            models=[
                serve_pb2.ServedModel(
                    name=card["id"],
                    model_version_id=card["model_version_id"],
                    loaded=card["model_version_id"] in self.app.backend.loaded(),
                )
                for card in await self.app.list_models()
            ]
        )

    async def CreateChatCompletion(self, request: Any, context: Any) -> Any:
        completion = await (await self._start(request)).collect()
        return serve_pb2.CreateChatCompletionResponse(
            id=completion.id,
            model=request.model,
            model_version_id=completion.model_version_id,
            content=completion.text,
            finish_reason=completion.finish_reason or "",
            usage=serve_pb2.Usage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            ),
        )

    async def StreamChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        completion = await self._start(request)
        async for delta in completion.stream():
            reply = serve_pb2.StreamChatCompletionResponse(
                id=completion.id,
                model_version_id=completion.model_version_id,
                delta=delta.text,
                finish_reason=delta.finish_reason or "",
            )
            if delta.finish_reason is not None:
                reply.usage.prompt_tokens = delta.prompt_tokens
                reply.usage.completion_tokens = delta.completion_tokens
            yield reply

    async def SubmitFeedback(self, request: Any, context: Any) -> Any:
        self.app.serving.feedback(
            request.completion_id,
            workspace=self._workspace(request.workspace),
            thumbs=request.thumbs,
            escalated=request.escalated,
            resolved=request.resolved,
        )
        return serve_pb2.SubmitFeedbackResponse(completion_id=request.completion_id)


def _app(context: ServiceContext[ServeSettings]) -> ServeApp:
    existing = context.resources.get("serve")
    if isinstance(existing, ServeApp):
        return existing
    app = ServeApp(context)
    app.bind_http()
    context.resources["serve"] = app
    context.resources["http_port"] = app.http_port
    return app


def grpc_bindings(context: ServiceContext[ServeSettings]) -> list[GrpcBinding]:
    servicer = ServeServicer(_app(context))
    return [GrpcBinding(serve_pb2_grpc.add_ServeServiceServicer_to_server, servicer, SERVICE_NAME)]


def background(context: ServiceContext[ServeSettings]) -> list[Callable[[], Awaitable[None]]]:
    app = _app(context)
    loops = [app.http_loop, app.follow_registry]
    if app.interactions is not None:
        loops.append(app.traffic_loop)
    return loops


DEFINITION = ServiceDefinition(
    name="serve",
    settings_cls=ServeSettings,
    grpc=grpc_bindings,
    background=background,
)


def main() -> int:
    return run_service_main(DEFINITION)


if __name__ == "__main__":
    sys.exit(main())
