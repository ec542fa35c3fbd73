"""gRPC server kit against a real grpc.aio server on port 0.

The test service is a generic handler over ``google.protobuf.StringValue``, so these tests
need none of tunewright's own protos.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from tunewright.core.errors import FieldViolation, InvalidArgument, NotFound
from tunewright.core.grpc_server import (
    ServerHandle,
    build_server,
    create_server,
    serve_until_signalled,
)
from tunewright.core.interceptors import CORRELATION_METADATA_KEY, error_details
from tunewright.core.logs import current_correlation_id
from tunewright.core.settings import GrpcSettings

SERVICE = "tw.test.v1.DemoService"
TIMEOUT = 5.0


class DemoService:
    """One behaviour per call shape, plus knobs for errors and slowness."""

    def __init__(self) -> None:
        self.slow_entered = asyncio.Event()

    async def echo(self, request: StringValue, context: Any) -> StringValue:
        return StringValue(value=request.value)

    async def fail(self, request: StringValue, context: Any) -> StringValue:
        if request.value == "not_found":
            raise NotFound("dataset ds_404 not found", reason="DATASET_NOT_FOUND")
        if request.value == "invalid":
            raise InvalidArgument(
                "bad request",
                field_violations=[
                    FieldViolation("splits.train", "must be in (0, 1)"),
                    FieldViolation("name", "must not be empty"),
                ],
            )
        raise ValueError("secret internal detail: row 17 of customers.csv")

    async def cid(self, request: StringValue, context: Any) -> StringValue:
        return StringValue(value=current_correlation_id() or "")

    async def count(self, request: StringValue, context: Any) -> AsyncIterator[StringValue]:
        for i in range(2):
            yield StringValue(value=str(i))
        raise NotFound("ran out", reason="STREAM_ENDED_BADLY")

    async def count_by_write(self, request: StringValue, context: Any) -> None:
        await context.write(StringValue(value="written"))
        raise ValueError("leaky detail")

    async def join(self, requests: AsyncIterator[StringValue], context: Any) -> StringValue:
        values = [r.value async for r in requests]
        if "" in values:
            raise InvalidArgument(
                "empty item", field_violations=[FieldViolation("items", "no empty strings")]
            )
        return StringValue(value=",".join(values))

    async def chat(
        self, requests: AsyncIterator[StringValue], context: Any
    ) -> AsyncIterator[StringValue]:
        async for r in requests:
            if r.value == "boom":
                raise ValueError("chat exploded with private text")
            yield StringValue(value=r.value.upper())

    async def slow(self, request: StringValue, context: Any) -> StringValue:
        self.slow_entered.set()
        await asyncio.sleep(0.3)
        return StringValue(value="finished")

    def register(self, server: Any) -> list[str]:
        codecs = {
            "request_deserializer": StringValue.FromString,
            "response_serializer": StringValue.SerializeToString,
        }
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo, **codecs),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail, **codecs),
            "Cid": grpc.unary_unary_rpc_method_handler(self.cid, **codecs),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow, **codecs),
            "Count": grpc.unary_stream_rpc_method_handler(self.count, **codecs),
            "CountByWrite": grpc.unary_stream_rpc_method_handler(self.count_by_write, **codecs),
            "Join": grpc.stream_unary_rpc_method_handler(self.join, **codecs),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat, **codecs),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]


def method(channel: Any, kind: str, name: str) -> Any:
    return getattr(channel, kind)(
        f"/{SERVICE}/{name}",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


async def start(settings: GrpcSettings | None = None) -> tuple[ServerHandle, DemoService]:
    service = DemoService()
    handle = build_server(settings=settings, register=service.register)
    await handle.start()
    return handle, service


@pytest.fixture
async def running() -> AsyncIterator[tuple[ServerHandle, DemoService, Any]]:
    handle, service = await start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        yield handle, service, channel
    await handle.stop(0)


async def test_health_and_reflection(running: tuple[ServerHandle, DemoService, Any]) -> None:
    handle, _, channel = running
    assert handle.port > 0
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await handle.set_serving(False, service=SERVICE)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
    )
    (response,) = [r async for r in call]
    names = {s.name for s in response.list_services_response.service}
    assert names == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_ok_call(running: tuple[ServerHandle, DemoService, Any]) -> None:
    _, _, channel = running
    reply = await method(channel, "unary_unary", "Echo")(StringValue(value="hi"), timeout=TIMEOUT)
    assert reply.value == "hi"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await method(channel, "unary_unary", "Nope")(StringValue(), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_watch_through_interceptors(
    running: tuple[ServerHandle, DemoService, Any],
) -> None:
    handle, _, channel = running
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT
    )
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    await handle.set_serving(False)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


async def test_not_found_carries_error_info(
    running: tuple[ServerHandle, DemoService, Any],
) -> None:
    _, _, channel = running
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await method(channel, "unary_unary", "Fail")(
            StringValue(value="not_found"), timeout=TIMEOUT
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "dataset ds_404 not found"
    assert error_details(info.value) == ("DATASET_NOT_FOUND", [])


async def test_invalid_argument_carries_field_violations(
    running: tuple[ServerHandle, DemoService, Any],
) -> None:
    _, _, channel = running
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await method(channel, "unary_unary", "Fail")(StringValue(value="invalid"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(info.value)
    assert reason == "INVALID_ARGUMENT"
    assert violations == [
        FieldViolation("splits.train", "must be in (0, 1)"),
        FieldViolation("name", "must not be empty"),
    ]


async def test_unexpected_error_is_internal_and_generic(
    running: tuple[ServerHandle, DemoService, Any], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, channel = running
    call = method(channel, "unary_unary", "Fail")(StringValue(value="bug"), timeout=TIMEOUT)
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    cid = dict(await call.initial_metadata())[CORRELATION_METADATA_KEY]
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == f"internal error (correlation id {cid})"
    assert "secret" not in str(info.value) and "customers.csv" not in str(info.value)
    assert error_details(info.value) == ("INTERNAL", [])
    (record,) = [r for r in caplog.records if r.msg == "unhandled error in rpc"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_streaming_errors_are_mapped(
    running: tuple[ServerHandle, DemoService, Any],
) -> None:
    _, _, channel = running
    # unary-stream, async generator: the items before the error arrive, then the status
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for reply in method(channel, "unary_stream", "Count")(
            StringValue(value="x"), timeout=TIMEOUT
        ):
            received.append(reply.value)
    assert received == ["0", "1"]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(info.value)[0] == "STREAM_ENDED_BADLY"

    # unary-stream written with context.write()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in method(channel, "unary_stream", "CountByWrite")(
            StringValue(value="x"), timeout=TIMEOUT
        ):
            pass
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "leaky" not in (info.value.details() or "")

    # stream-unary
    join = method(channel, "stream_unary", "Join")
    ok = await join(iter([StringValue(value="a"), StringValue(value="b")]), timeout=TIMEOUT)
    assert ok.value == "a,b"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await join(iter([StringValue(value="a"), StringValue(value="")]), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(info.value)[1] == [FieldViolation("items", "no empty strings")]

    # stream-stream
    chat = method(channel, "stream_stream", "Chat")
    replies = [
        r.value
        async for r in chat(iter([StringValue(value="a"), StringValue(value="b")]), timeout=TIMEOUT)
    ]
    assert replies == ["A", "B"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in chat(
            iter([StringValue(value="a"), StringValue(value="boom")]), timeout=TIMEOUT
        ):
            pass
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "private" not in (info.value.details() or "")


async def test_correlation_id_propagates(
    running: tuple[ServerHandle, DemoService, Any],
) -> None:
    _, _, channel = running
    cid_method = method(channel, "unary_unary", "Cid")
    call = cid_method(
        StringValue(), metadata=((CORRELATION_METADATA_KEY, "req-42"),), timeout=TIMEOUT
    )
    assert (await call).value == "req-42"
    assert dict(await call.initial_metadata())[CORRELATION_METADATA_KEY] == "req-42"

    call = cid_method(StringValue(), timeout=TIMEOUT)  # none sent: the server makes one
    made = (await call).value
    assert len(made) == 32
    assert dict(await call.initial_metadata())[CORRELATION_METADATA_KEY] == made

    call = cid_method(  # not log-safe: replaced
        StringValue(), metadata=((CORRELATION_METADATA_KEY, "a b c;" * 50),), timeout=TIMEOUT
    )
    assert (await call).value not in ("", "a b c;" * 50)


async def test_bearer_token_auth() -> None:
    handle, _ = await start(GrpcSettings(auth_token=SecretStr("t0ken-value")))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            echo = method(channel, "unary_unary", "Echo")
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "t0ken-value"),)):  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await echo(StringValue(value="x"), metadata=metadata, timeout=TIMEOUT)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in method(channel, "unary_stream", "Count")(
                    StringValue(value="x"), timeout=TIMEOUT
                ):
                    pass
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

            good = (("authorization", "Bearer t0ken-value"),)
            reply = await echo(StringValue(value="x"), metadata=good, timeout=TIMEOUT)
            assert reply.value == "x"

            # probes and discovery need no token
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
            )
            assert [r async for r in call]
    finally:
        await handle.stop(0)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    yield cert, key


async def test_tls(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    handle, _ = await start(GrpcSettings(tls_cert_file=cert, tls_key_file=key))
    try:
        assert handle.tls
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{handle.port}", credentials) as channel:
            reply = await method(channel, "unary_unary", "Echo")(
                StringValue(value="over tls"), timeout=TIMEOUT
            )
            assert reply.value == "over tls"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await method(plain, "unary_unary", "Echo")(StringValue(value="x"), timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.stop(0)


async def test_graceful_stop_lets_in_flight_call_finish() -> None:
    handle, service = await start()
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_until_signalled(handle, grace=5, stop=stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        in_flight = asyncio.ensure_future(
            method(channel, "unary_unary", "Slow")(StringValue(), timeout=TIMEOUT)
        )
        await asyncio.wait_for(service.slow_entered.wait(), TIMEOUT)
        stop.set()
        assert (await in_flight).value == "finished"
        await asyncio.wait_for(serving, TIMEOUT)
    reply = await handle.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_sigterm_stops_the_server() -> None:
    handle, _ = await start()
    serving = asyncio.create_task(serve_until_signalled(handle, grace=1))
    for _ in range(100):  # until the task has installed its handler
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            break
        await asyncio.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serving, TIMEOUT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


async def test_health_is_not_serving_until_started() -> None:
    service = DemoService()
    handle = build_server(register=service.register)
    await handle.server.start()  # listening, but the handle has not said SERVING yet
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(name: str) -> int:
                request = health_pb2.HealthCheckRequest(service=name)
                return int((await health.Check(request, timeout=TIMEOUT)).status)

            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert await status("") == not_serving
            assert await status(SERVICE) == not_serving
            await handle.set_serving(True)
            assert await status("") == health_pb2.HealthCheckResponse.SERVING
            assert await status(SERVICE) == health_pb2.HealthCheckResponse.SERVING
            await handle.set_serving(False, service=SERVICE)
            assert await status(SERVICE) == not_serving
            assert await status("") == health_pb2.HealthCheckResponse.SERVING
    finally:
        await handle.server.stop(0)


async def test_create_server_shape_and_busy_port() -> None:
    server, port = create_server("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(RuntimeError, match="cannot bind"):
            create_server(f"127.0.0.1:{port}")
    finally:
        await server.stop(0)
