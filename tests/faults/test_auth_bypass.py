"""Auth bypass attempts against the real servers.

gRPC: every RPC of every service, enumerated from the generated descriptors (a new RPC is
covered without touching this file; health and reflection are open on purpose), is called on
the service's real server, started by the service kit with auth on, with credentials that must
not pass: none, a wrong token, ``Bearer`` with nothing after it, the platform token or an
identity's token without the ``Bearer`` prefix, and the platform token one character short or
long. Each is UNAUTHENTICATED and the servicer method never runs. Then the registry's
privileged RPCs refuse a viewer and a submitter with PERMISSION_DENIED and a stated reason, and
nothing they asked for exists afterwards.

NATS: the embedded nats-server with one user per service, as ``tunewright up`` starts it
(deny lists from :func:`tunewright.core.catalog.facts_not_owned_by`), refuses a connection
without credentials or with a wrong password, and refuses the ingest user's publish of an
evaluator fact: a permissions violation, and the stream never stores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import yaml
from google.protobuf import descriptor_pool, message_factory
from nats.js.errors import NotFoundError

from tunewright.cli.stack import NATS_CLI_USER, SERVICES
from tunewright.common.v1 import common_pb2
from tunewright.core import catalog, subjects
from tunewright.core.identities import token_digest
from tunewright.core.interceptors import error_details
from tunewright.core.nats_server import NatsServer, NatsUser
from tunewright.core.service import RunningService, ServiceDefinition, start_service
from tunewright.core.settings import load_settings
from tunewright.events.v1 import events_pb2
from tunewright.registry.v1 import registry_pb2, registry_pb2_grpc

from .conftest import Figures

PLATFORM = "tw-grpc-platform-token-for-the-bypass-test"
TOKENS = {role: f"tw-id-{role}-token-for-the-bypass-test" for role in ("viewer", "submitter")}
# what a service needs beyond NATS, a port and a data dir to start
EXTRA_SETTINGS: dict[str, dict[str, Any]] = {
    "serve": {"serve": {"http": {"port": 0, "api_key": "tw-serve-key-for-the-bypass-test"}}}
}
CALL_TIMEOUT_S = 10

#: credentials that must not authenticate: name -> request metadata
REFUSED: dict[str, tuple[tuple[str, str], ...]] = {
    "no metadata": (),
    "wrong token": (("authorization", "Bearer " + "x" * len(PLATFORM)),),
    "Bearer, empty token": (("authorization", "Bearer "),),
    "platform token without Bearer": (("authorization", PLATFORM),),
    "identity token without Bearer": (("authorization", TOKENS["submitter"]),),
    "platform token one short": (("authorization", f"Bearer {PLATFORM[:-1]}"),),
    "platform token one long": (("authorization", f"Bearer {PLATFORM}x"),),
}


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# --- the services, with their servicer methods counted ---------------------------------------


class _Counting:
    """Stands in for a servicer: counts each RPC method the server calls, then delegates."""

    def __init__(self, inner: object, service: str, calls: Counter[str]) -> None:
        self._inner, self._service, self._calls = inner, service, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not (name[:1].isupper() and callable(attr)):
            return attr

        def counted(*args: Any) -> Any:
            self._calls[f"{self._service}/{name}"] += 1
            return attr(*args)  # a coroutine or an async generator, as the servicer's own

        return counted


def _definition(name: str, calls: Counter[str]) -> ServiceDefinition[Any]:
    definition: ServiceDefinition[Any] = importlib.import_module(
        f"tunewright.{name}.server"
    ).DEFINITION
    original = definition.grpc

    def bindings(context: Any) -> list[Any]:
        return [
            dataclasses.replace(b, servicer=_Counting(b.servicer, name, calls))
            for b in original(context)
        ]

    return dataclasses.replace(definition, grpc=bindings)


def _identities_file(path: Path) -> Path:
    entries = [
        {"name": f"{role}-1", "role": role, "token_sha256": token_digest(token)}
        for role, token in TOKENS.items()
    ]
    path.write_text(yaml.safe_dump({"identities": entries}))
    return path


@asynccontextmanager
async def _services(
    names: tuple[str, ...], nats_url: str, tmp_path: Path, calls: Counter[str]
) -> AsyncIterator[dict[str, RunningService[Any]]]:
    identities = _identities_file(tmp_path / "identities.yaml")

    async def start(name: str) -> RunningService[Any]:
        definition = _definition(name, calls)
        settings = load_settings(
            definition.settings_cls,
            nats={"url": nats_url},
            grpc={"port": 0, "auth_token": PLATFORM, "identities_file": str(identities)},
            data_dir=tmp_path / name,
            **EXTRA_SETTINGS.get(name, {}),
        )
        return await start_service(definition, settings)

    async with AsyncExitStack() as stack:
        running: dict[str, RunningService[Any]] = {}
        for name in names:
            running[name] = await start(name)
            stack.push_async_callback(running[name].stop)
        yield running


# --- calling any RPC from its descriptor ------------------------------------------------------


def _service_descriptors(service: RunningService[Any]) -> list[Any]:
    """The generated descriptors of every gRPC service the server registered (health and
    reflection are not among them: open on purpose); at least its own proto's."""
    name = service.definition.name
    own = importlib.import_module(f"tunewright.{name}.v1.{name}_pb2").DESCRIPTOR
    assert set(own.services_by_name.values()) <= {
        descriptor_pool.Default().FindServiceByName(full) for full in service.server.services
    }, f"{name}: a service of {own.name} is not served"
    return [descriptor_pool.Default().FindServiceByName(full) for full in service.server.services]


async def _code_of(channel: Any, method: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    """The status of calling ``method`` with an empty request (a stream: its first message)."""
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    codecs = {
        "request_serializer": request_cls.SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    kwargs = {"metadata": metadata, "timeout": CALL_TIMEOUT_S}
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path, **codecs)(iter([request_cls()]), **kwargs)
            await call.read()
        elif method.client_streaming:
            await channel.stream_unary(path, **codecs)(iter([request_cls()]), **kwargs)
        elif method.server_streaming:
            call = channel.unary_stream(path, **codecs)(request_cls(), **kwargs)
            await call.read()
            return await call.code()  # a message or a clean end: it got in
        else:
            await channel.unary_unary(path, **codecs)(request_cls(), **kwargs)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_no_rpc_of_any_service_answers_without_a_valid_token(
    nats_url: str, tmp_path: Path, figures: Figures
) -> None:
    calls: Counter[str] = Counter()
    results: dict[tuple[str, str, str], Any] = {}
    async with _services(SERVICES, nats_url, tmp_path, calls) as running:
        for name, service in running.items():
            methods = [m for d in _service_descriptors(service) for m in d.methods]
            assert methods, f"{name}: no RPCs found in its descriptors"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                attempts = [(m, label, md) for m in methods for label, md in REFUSED.items()]
                codes = await asyncio.gather(
                    *(_code_of(channel, m, md) for m, _label, md in attempts)
                )
                for (m, label, _md), code in zip(attempts, codes, strict=True):
                    results[(name, m.name, label)] = code
        ran = dict(calls)  # servicer methods that ran for a refused caller: none may have
        # the platform token itself gets past auth on every server (the refusals above are
        # auth's, not a server that refuses everything)
        for name, service in running.items():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                method = _service_descriptors(service)[0].methods[0]
                code = await _code_of(channel, method, _as(PLATFORM))
                assert code != grpc.StatusCode.UNAUTHENTICATED, (name, method.name)
                # ... and the count of servicer calls sees a call that got in
                assert calls[f"{name}/{method.name}"] == 1, (name, method.name, dict(calls))

    let_in = {k: v for k, v in results.items() if v != grpc.StatusCode.UNAUTHENTICATED}
    assert not let_in, f"not UNAUTHENTICATED: {let_in}"
    assert not ran, f"servicer methods ran without a valid token: {ran}"
    figures.record(
        "gRPC auth bypass: no or bad token, every RPC of 7 services",
        "auth",
        injected=len(results),
        survived=len(results) - len(let_in),
        outcome="UNAUTHENTICATED, servicer never ran",
    )


async def test_registry_privileged_rpcs_refuse_viewer_and_submitter(
    nats_url: str, tmp_path: Path, figures: Figures
) -> None:
    calls: Counter[str] = Counter()
    async with _services(("registry",), nats_url, tmp_path, calls) as running:
        port = running["registry"].port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            target = (
                await stub.RegisterModelVersion(
                    registry_pb2.RegisterModelVersionRequest(
                        model_version=registry_pb2.ModelVersion(
                            model="support-bot", base_model="tiny:llama-xxs", method="sft"
                        )
                    ),
                    metadata=_as(PLATFORM),
                )
            ).model_version
            # requests that would succeed (or reach the domain) for a role allowed to make them
            privileged: dict[str, tuple[Callable[..., Any], Any, str]] = {
                "promote": (
                    stub.Promote,
                    registry_pb2.PromoteRequest(model_version_id=target.id, alias="production"),
                    "ROLE_REQUIRED",
                ),
                "force promote": (
                    stub.Promote,
                    registry_pb2.PromoteRequest(
                        model_version_id=target.id, alias="production", force=True, reason="r"
                    ),
                    "ROLE_REQUIRED",
                ),
                "rollback": (
                    stub.Rollback,
                    registry_pb2.RollbackRequest(model="support-bot", alias="production"),
                    "ROLE_REQUIRED",
                ),
                "approve stage": (
                    stub.ApprovePipelineStage,
                    registry_pb2.ApprovePipelineStageRequest(
                        run_id="pipe_missing", stage="approve", approved=True
                    ),
                    "ROLE_REQUIRED",
                ),
                "reject stage": (
                    stub.ApprovePipelineStage,
                    registry_pb2.ApprovePipelineStageRequest(
                        run_id="pipe_missing", stage="approve", approved=False, comment="no"
                    ),
                    "ROLE_REQUIRED",
                ),
                "register dataset": (
                    stub.RegisterDatasetVersion,
                    registry_pb2.RegisterDatasetVersionRequest(
                        dataset_version=registry_pb2.DatasetVersion(
                            id="dv-forged",
                            dataset="tickets",
                            content_hash="sha256:" + "0" * 64,
                            kind=common_pb2.DATASET_KIND_SFT,
                        )
                    ),
                    "ROLE_REQUIRED",
                ),
                "register run": (
                    stub.RegisterTrainingRun,
                    registry_pb2.RegisterTrainingRunRequest(
                        run=registry_pb2.TrainingRun(job_id="job-forged")
                    ),
                    "ROLE_REQUIRED",
                ),
                "register model": (
                    stub.RegisterModelVersion,
                    registry_pb2.RegisterModelVersionRequest(
                        model_version=registry_pb2.ModelVersion(
                            model="forged", base_model="tiny:llama-xxs", method="sft"
                        )
                    ),
                    "ROLE_REQUIRED",
                ),
                # only the evaluator service's own identity may record a verdict
                "register evaluation": (
                    stub.RegisterEvaluation,
                    registry_pb2.RegisterEvaluationRequest(
                        evaluation=registry_pb2.Evaluation(candidate_model_version_id=target.id)
                    ),
                    "SERVICE_IDENTITY_REQUIRED",
                ),
            }
            viewer_only = {
                "submit pipeline": (
                    stub.SubmitPipelineRun,
                    registry_pb2.SubmitPipelineRunRequest(spec_yaml="not: a pipeline"),
                    "ROLE_REQUIRED",
                ),
                "cancel pipeline": (
                    stub.CancelPipelineRun,
                    registry_pb2.CancelPipelineRunRequest(run_id="pipe_missing"),
                    "ROLE_REQUIRED",
                ),
            }
            outcomes: dict[tuple[str, str], tuple[Any, str]] = {}
            for role, token in TOKENS.items():
                cases = {**privileged, **(viewer_only if role == "viewer" else {})}
                for case, (call, request, _reason) in cases.items():
                    try:
                        await call(request, metadata=_as(token), timeout=CALL_TIMEOUT_S)
                        outcomes[(role, case)] = (grpc.StatusCode.OK, "")
                    except grpc.aio.AioRpcError as exc:
                        outcomes[(role, case)] = (exc.code(), error_details(exc)[0])
            wrong = {
                (role, case): got
                for (role, case), got in outcomes.items()
                # a viewer is stopped before any handler: only reads are open to it
                if got
                != (
                    grpc.StatusCode.PERMISSION_DENIED,
                    "ROLE_REQUIRED" if role == "viewer" else {**privileged, **viewer_only}[case][2],
                )
            }
            assert not wrong, f"not PERMISSION_DENIED with the expected reason: {wrong}"

            # nothing the refused calls asked for exists
            admin = _as(PLATFORM)
            models = await stub.ListModelVersions(
                registry_pb2.ListModelVersionsRequest(), metadata=admin
            )
            assert [v.id for v in models.model_versions] == [target.id]
            assert not (
                await stub.ListDatasetVersions(
                    registry_pb2.ListDatasetVersionsRequest(), metadata=admin
                )
            ).dataset_versions
            assert not (
                await stub.ListTrainingRuns(registry_pb2.ListTrainingRunsRequest(), metadata=admin)
            ).runs
            assert not (
                await stub.ListEvaluations(registry_pb2.ListEvaluationsRequest(), metadata=admin)
            ).evaluations
            assert not (
                await stub.ListAliases(registry_pb2.ListAliasesRequest(), metadata=admin)
            ).aliases
            assert not (
                await stub.ListPipelineRuns(registry_pb2.ListPipelineRunsRequest(), metadata=admin)
            ).runs
    figures.record(
        "gRPC auth bypass: viewer/submitter on registry privileged RPCs",
        "auth",
        injected=len(outcomes),
        survived=len(outcomes) - len(wrong),
        outcome="PERMISSION_DENIED (ROLE_REQUIRED / SERVICE_IDENTITY_REQUIRED), nothing created",
    )


# --- NATS -------------------------------------------------------------------------------------


def _stack_users() -> dict[str, NatsUser]:
    """The users `tunewright up` gives its embedded server: the CLI, and each service denied
    the facts the others own and the streams' administration."""
    users = {NATS_CLI_USER: NatsUser(f"pw-{NATS_CLI_USER}-for-the-bypass-test")}
    for service in SERVICES:
        users[service] = NatsUser(
            f"pw-{service}-for-the-bypass-test", catalog.publish_denied_to(service)
        )
    return users


async def _refused(url: str, **auth: str) -> Exception | None:
    async def quiet(_exc: Exception) -> None:
        pass  # the refusal is returned and checked, not logged

    try:
        nc = await nats.connect(
            url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            error_cb=quiet,
            **auth,
        )
    except Exception as exc:  # nats-py raises a plain nats.errors.Error with the server's text
        return exc
    await nc.close()
    return None


async def test_nats_refuses_strangers_and_forged_facts(tmp_path: Path, figures: Figures) -> None:
    users = _stack_users()
    subject = subjects.EVALUATOR_RUN_COMPLETED
    stream = catalog.stream_for_subject(subject).name
    assert subject in users["ingest"].deny_publish
    with NatsServer(tmp_path / "nats", users=users) as server:
        attempts = {
            "no credentials": await _refused(server.url),
            "wrong password": await _refused(
                server.url, user="ingest", password="pw-not-the-ingest-password"
            ),
            "unknown user": await _refused(server.url, user="mallory", password="x"),
        }
        assert all(attempts.values()), f"connected: {[k for k, v in attempts.items() if not v]}"
        assert all("authorization violation" in str(e).lower() for e in attempts.values()), attempts

        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        cli = await nats.connect(
            server.url, user=NATS_CLI_USER, password=users[NATS_CLI_USER].password
        )
        ingest = await nats.connect(
            server.url, user="ingest", password=users["ingest"].password, error_cb=on_error
        )
        evaluator = await nats.connect(
            server.url, user="evaluator", password=users["evaluator"].password
        )
        try:
            await cli.jetstream().add_stream(
                name=stream, subjects=list(catalog.stream(stream).subjects)
            )
            forged = events_pb2.EvaluatorRunCompleted(
                meta=common_pb2.EventMeta(event_id="forged")
            ).SerializeToString()
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await ingest.jetstream().publish(subject, forged, timeout=1)
            await ingest.flush()
            for _ in range(50):
                if errors:
                    break
                await asyncio.sleep(0.02)
            assert any("permissions violation" in str(e).lower() for e in errors), errors
            with pytest.raises(NotFoundError):
                await cli.jetstream().get_last_msg(stream, subject)
            assert (await cli.jetstream().stream_info(stream)).state.messages == 0
            # the evaluator itself may publish it: the refusal was the deny list's
            real = events_pb2.EvaluatorRunCompleted(
                meta=common_pb2.EventMeta(event_id="real")
            ).SerializeToString()
            await evaluator.jetstream().publish(subject, real, timeout=5)
            stored = await cli.jetstream().get_last_msg(stream, subject)
            assert (
                events_pb2.EvaluatorRunCompleted.FromString(stored.data or b"").meta.event_id
                == "real"
            )
        finally:
            for nc in (cli, ingest, evaluator):
                await nc.close()
    figures.record(
        "NATS auth bypass: strangers and a forged fact",
        "auth",
        injected=len(attempts) + 1,
        survived=len(attempts) + 1,
        outcome="authorization violation / permissions violation, nothing stored",
    )


# --- what a viewer and a service's own NATS user may not do -----------------------------------

#: RPC verbs that change state; a viewer ("read") may use none of them
_WRITE_VERBS = ("Submit", "Cancel", "Pause", "Resume", "Create", "Upload", "Import", "Log",
                "Register", "Promote", "Rollback", "Approve")  # fmt: skip
#: inference is serve's read path, not a change
_READS = frozenset({"serve/CreateChatCompletion", "serve/StreamChatCompletion"})


async def test_a_viewer_changes_nothing_on_any_service(
    nats_url: str, tmp_path: Path, figures: Any
) -> None:
    calls: Counter[str] = Counter()
    let_through: dict[str, Any] = {}
    tried = 0
    async with _services(SERVICES, nats_url, tmp_path, calls) as running:
        for name, service in running.items():
            writes = [
                m
                for d in _service_descriptors(service)
                for m in d.methods
                if m.name.startswith(_WRITE_VERBS) and f"{name}/{m.name}" not in _READS
            ]
            tried += len(writes)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                for m in writes:
                    code = await _code_of(channel, m, _as(TOKENS["viewer"]))
                    if code != grpc.StatusCode.PERMISSION_DENIED:
                        let_through[f"{name}/{m.name}"] = code
    assert not let_through, f"a viewer got past the role check of: {let_through}"
    assert not calls, f"handlers ran for a viewer: {dict(calls)}"
    figures.record(
        "gRPC: a viewer calls every write RPC of every service",
        "auth",
        injected=tried,
        survived=tried,
        outcome="PERMISSION_DENIED (ROLE_REQUIRED) before any handler",
    )


async def test_a_service_user_cannot_rewrite_the_facts_stream(tmp_path: Path, figures: Any) -> None:
    users = _stack_users()
    facts = catalog.stream("TW_FACTS")
    forged_subject = subjects.EVALUATOR_RUN_COMPLETED
    got_through: list[str] = []
    with NatsServer(tmp_path / "nats", users=users) as server:
        cli = await nats.connect(
            server.url, user=NATS_CLI_USER, password=users[NATS_CLI_USER].password
        )

        async def quiet(_exc: Exception) -> None:
            pass  # permission violations are expected here; the outcome is checked below

        serve = await nats.connect(
            server.url, user="serve", password=users["serve"].password, error_cb=quiet
        )
        try:
            js = cli.jetstream()
            await js.add_stream(name=facts.name, subjects=list(facts.subjects))
            await js.publish(subjects.REGISTRY_MODEL_PROMOTED, b"a fact")

            async def api(subject: str, body: dict[str, Any] | None = None) -> bool:
                payload = json.dumps(body).encode() if body is not None else b""
                try:
                    reply = await serve.request(subject, payload, timeout=1)
                except (TimeoutError, nats.errors.Error):
                    return False
                return "error" not in json.loads(reply.data)

            if await api(f"$JS.API.STREAM.PURGE.{facts.name}"):
                got_through.append("purged TW_FACTS")
            if await api("$JS.API.STREAM.CREATE.TW_EVIL", {"name": "TW_EVIL",
                                                          "subjects": ["evil.x"]}):  # fmt: skip
                config = (await js.stream_info(facts.name)).config.as_dict()
                transform = {"src": "evil.x", "dest": forged_subject}
                config["sources"] = [{"name": "TW_EVIL", "subject_transforms": [transform]}]
                if await api(f"$JS.API.STREAM.UPDATE.{facts.name}", config):
                    await serve.request("evil.x", b"forged", timeout=1)
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(NotFoundError):
                        await js.get_last_msg(facts.name, forged_subject)
                        got_through.append(f"stored a forged {forged_subject} in TW_FACTS")
            if await api(f"$JS.API.STREAM.DELETE.{facts.name}"):
                got_through.append("deleted TW_FACTS")
        finally:
            for nc in (cli, serve):
                await nc.close()
    assert not got_through, f"the serve user {', '.join(got_through)}"
    figures.record(
        "NATS: a service's user purges, deletes or re-sources TW_FACTS",
        "auth",
        injected=3,
        survived=3,
        outcome="JetStream API refused (permissions violation), TW_FACTS intact",
    )
