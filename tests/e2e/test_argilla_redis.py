"""The Redis that scripts/argilla/serve.py starts for Argilla: rq's worker unpickles what it
finds there, so only clients holding the generated password may talk to it (Debian's
redis-server, real)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

SERVE = Path(__file__).resolve().parents[2] / "scripts" / "argilla" / "serve.py"


def _serve_module() -> ModuleType:
    """serve.py imports argilla_server only inside main(): start_redis runs in any venv."""
    spec = importlib.util.spec_from_file_location("argilla_serve", SERVE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _send(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(command)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
        return reply


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server missing: apt-get install redis-server")
    directory = tmp_path_factory.mktemp("argilla") / "redis"
    proc, url = _serve_module().start_redis(directory)
    try:
        yield directory, url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_client_without_the_password_is_refused(redis: tuple[Path, str, int]) -> None:
    _, url, _ = redis
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port and parts.password
    assert _send(parts.port, b"PING\r\n").startswith(b"-NOAUTH")
    # a queued rq job is a key like any other: not writable without the password either
    assert _send(parts.port, b"SET rq:job:x payload\r\n").startswith(b"-NOAUTH")
    assert _send(parts.port, b"AUTH not-the-password\r\n").startswith(b"-WRONGPASS")
    assert _send(parts.port, f"AUTH {parts.password}\r\n".encode()) == b"+OK\r\n"


def test_the_password_is_private_and_on_no_command_line(redis: tuple[Path, str, int]) -> None:
    directory, url, pid = redis
    password = urlsplit(url).password
    assert password is not None and len(password) == 64
    kept = directory / "redis.password"
    assert kept.read_text().strip() == password
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_it_listens_on_loopback_in_protected_mode(redis: tuple[Path, str, int]) -> None:
    _, url, _ = redis
    parts = urlsplit(url)
    assert parts.port is not None
    auth = f"AUTH {parts.password}\r\n".encode()

    def config(name: str) -> bytes:
        with socket.create_connection(("127.0.0.1", parts.port), timeout=2) as sock:
            sock.sendall(auth + f"CONFIG GET {name}\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 6:  # +OK, then a 2-element array of bulk strings
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.split(b"\r\n")[-2]

    assert config("bind") == b"127.0.0.1"
    assert config("protected-mode") == b"yes"
    assert config("save") == b""
    assert config("appendonly") == b"no"
