"""Fixtures the cross-service tests share: the example ticket generator, an uploader, and the
`tunewright` CLI for the stack tests."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.ingest.v1 import ingest_pb2, ingest_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-tickets"


@pytest.fixture(scope="session")
def ticketgen() -> ModuleType:
    """examples/support-tickets/ticketgen.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("ticketgen", EXAMPLE / "ticketgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ticketgen"] = module
    spec.loader.exec_module(module)
    return module


Upload = Callable[[int, bytes], Awaitable[common_pb2.ArtifactRef]]


@pytest.fixture
def upload() -> Upload:
    """``await upload(ingest_port, data)``: UploadDataset (client streaming) -> ArtifactRef."""

    async def run(port: int, data: bytes) -> common_pb2.ArtifactRef:
        async def chunks() -> AsyncIterator[ingest_pb2.UploadDatasetRequest]:
            yield ingest_pb2.UploadDatasetRequest(
                header=ingest_pb2.UploadHeader(filename="tickets.jsonl", size_bytes=len(data))
            )
            for i in range(0, len(data), 64 * 1024):
                yield ingest_pb2.UploadDatasetRequest(chunk=data[i : i + 64 * 1024])

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await ingest_pb2_grpc.IngestServiceStub(channel).UploadDataset(chunks())
        return reply.artifact  # type: ignore[no-any-return]

    return run


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
    ) -> subprocess.CompletedProcess[str]:
        """``tunewright *args`` in ``cwd``, without this process's env vars that start with
        ``drop_env`` (the config file is the only source of settings)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_env))}
        env["COLUMNS"] = "200"
        result = subprocess.run(
            [self.exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"tunewright {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="session")
def stack_cli() -> StackCli:
    return StackCli()
