"""Fixtures the cross-service tests share: the example ticket generator and an uploader (the
`tunewright` CLI for the stack tests, ``stack_cli``, is in the root conftest)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
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
