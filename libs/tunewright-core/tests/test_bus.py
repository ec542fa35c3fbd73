"""EventBus against a real nats-server: declaration, dedup, retries, DLQ, crash redelivery."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from google.protobuf import struct_pb2

from tunewright.core import bus as bus_module
from tunewright.core import catalog
from tunewright.core import subjects as s
from tunewright.core.bus import (
    Delivery,
    EventBus,
    KvProcessedStore,
    MemoryProcessedStore,
    Subscription,
    UndecodableMessage,
    dead_letter_reason,
    idempotent,
    message_id,
    publish_until_acked,
)
from tunewright.core.catalog import ConsumerSpec
from tunewright.core.errors import InvalidArgument, Unavailable
from tunewright.core.logs import configure_logging
from tunewright.core.nats_server import NatsServer
from tunewright.core.settings import NatsSettings
from tunewright.events.v1 import events_pb2

WORKER = "trainer-worker"
SUBJECT = s.TRAINER_JOB_REQUESTED
# scaled down so redelivery, retries and dead-lettering happen within a second or two
FAST = {"ack_wait_s": 1.0, "backoff_s": (0.1,), "max_deliver": 3}


def fast_consumers(**overrides: object) -> list[ConsumerSpec]:
    return [replace(c, **{**FAST, **overrides}) for c in catalog.CONSUMERS]  # type: ignore[arg-type]


async def eventually(check: Callable[[], bool | Awaitable[bool]], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def job(job_id: str) -> events_pb2.TrainerJobRequested:
    return events_pb2.TrainerJobRequested(job_id=job_id)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the service's JSON log handler writes, at DEBUG."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging(service="test", level="DEBUG", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    b = await EventBus.connect(nats_url, name="test", consumers=fast_consumers())
    await b.declare()
    yield b
    await b.close()


async def consumer_state(b: EventBus, durable: str = WORKER) -> tuple[int, int]:
    (info,) = [c for c in await b.consumer_infos() if c.durable == durable]
    return info.num_pending, info.num_ack_pending


async def stream_messages(b: EventBus, name: str) -> int:
    (info,) = [x for x in await b.stream_infos() if x.name == name]
    return info.messages


async def test_declare_twice_creates_every_catalog_stream_and_consumer(bus: EventBus) -> None:
    await bus.declare()
    streams = {x.name: x.subjects for x in await bus.stream_infos()}
    assert streams == {spec.name: spec.subjects for spec in catalog.STREAMS}
    durables = {c.durable for c in await bus.consumer_infos()}
    assert durables == {c.durable for c in catalog.CONSUMERS}

    # a changed consumer spec (new release) updates the existing durable in place
    again = EventBus(bus.nc, consumers=fast_consumers(ack_wait_s=7.0))
    await again.declare()
    info = await bus.js.consumer_info("TW_TRAINER_WORK", WORKER)
    assert info.config.ack_wait == 7.0


async def test_stream_replicas_setting_reaches_the_server(nats_url: str) -> None:
    settings = NatsSettings(url=nats_url, stream_replicas=3)
    b = await EventBus.from_settings(settings, name="replicas", wait_for_server_s=5)
    try:
        assert b.replicas == 3
        # a single server refuses three copies: the setting is what the streams ask for (on a
        # cluster they get them)
        with pytest.raises(nats.js.errors.APIError, match="replicas > 1"):
            await b.declare()
    finally:
        await b.close()
    b = await EventBus.from_settings(NatsSettings(url=nats_url), name="one", wait_for_server_s=5)
    try:
        await b.declare()
        info = await b.js.stream_info(catalog.STREAMS[0].name)
        assert info.config.num_replicas == 1
    finally:
        await b.close()


async def test_consume_needs_a_declared_durable(nats_url: str) -> None:
    b = await EventBus.connect(nats_url, name="early")
    try:
        with pytest.raises(KeyError, match="unknown consumer 'nope'"):
            await b.consume("nope", _noop)
        with pytest.raises(LookupError, match="declare"):
            await b.consume(WORKER, _noop)
    finally:
        await b.close()


async def _noop(d: Delivery) -> None:
    pass


async def test_same_subject_and_key_is_stored_once(bus: EventBus) -> None:
    first = await bus.publish(SUBJECT, job("j1"), key="j1")
    second = await bus.publish(SUBJECT, job("j1"), key="j1")
    other = await bus.publish(SUBJECT, job("j2"), key="j2")
    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    assert not other.duplicate
    assert await stream_messages(bus, "TW_TRAINER_WORK") == 2
    assert message_id(SUBJECT, "j1") != message_id(SUBJECT, "j2")


async def test_publish_checks_subject_and_message_type(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="not declared"):
        await bus.publish("tw.nope.thing.happened", job("j"), key="j")
    with pytest.raises(ValueError, match=r"TrainerJobRequested, got .*TrainerJobStarted"):
        await bus.publish(SUBJECT, events_pb2.TrainerJobStarted(job_id="j"), key="j")
    with pytest.raises(ValueError, match="key"):
        await bus.publish(SUBJECT, job("j"), key="")


async def test_delivery_carries_headers_and_decodes(bus: EventBus) -> None:
    got: list[Delivery] = []

    async def handler(d: Delivery) -> None:
        got.append(d)

    await bus.publish(SUBJECT, job("j1"), key="j1", correlation_id="corr-1", workspace="acme")
    await bus.consume(WORKER, handler)
    await eventually(lambda: len(got) == 1)
    d = got[0]
    assert (d.subject, d.correlation_id, d.workspace) == (SUBJECT, "corr-1", "acme")
    assert d.msg_id == message_id(SUBJECT, "j1")
    assert d.num_delivered == 1
    assert d.event_type == "tunewright.events.v1.TrainerJobRequested"
    assert d.decode() == job("j1")
    assert d.decode(events_pb2.TrainerJobRequested).job_id == "j1"
    with pytest.raises(UndecodableMessage):
        d.decode(events_pb2.TrainerJobStarted)


async def test_unchecked_publish_decodes_any_registered_type(bus: EventBus) -> None:
    got: list[Delivery] = []

    async def handler(d: Delivery) -> None:
        got.append(d)

    payload = struct_pb2.Struct()
    payload.update({"answer": 42})
    await bus._publish_unchecked(SUBJECT, payload, key="k")
    await bus.consume(WORKER, handler)
    await eventually(lambda: len(got) == 1)
    assert got[0].decode() == payload


async def test_handler_failing_twice_then_succeeding_is_retried_and_acked(bus: EventBus) -> None:
    deliveries: list[int] = []

    async def flaky(d: Delivery) -> None:
        deliveries.append(d.num_delivered)
        if len(deliveries) < 3:
            raise RuntimeError("transient")

    await bus.publish(SUBJECT, job("j1"), key="j1")
    await bus.consume(WORKER, flaky)
    await eventually(lambda: len(deliveries) == 3)
    await eventually(lambda: _async_eq(consumer_state(bus), (0, 0)))
    assert deliveries == [1, 2, 3]
    assert await stream_messages(bus, "TW_TRAINER_WORK") == 0  # acked work is removed
    assert await stream_messages(bus, "TW_DLQ") == 0


async def _async_eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def dead_letter(bus: EventBus, subject: str) -> nats.js.api.RawStreamMsg:
    async def exists() -> bool:
        return await stream_messages(bus, "TW_DLQ") > 0

    await eventually(exists)
    return await bus.js.get_last_msg("TW_DLQ", s.dead_letter_subject(subject))


async def test_handler_always_failing_lands_in_dlq_after_max_deliver(
    bus: EventBus, json_log: io.StringIO
) -> None:
    calls: list[int] = []
    row = '{"prompt": "my SSN is 123-45-6789"}'

    async def broken(d: Delivery) -> None:
        calls.append(d.num_delivered)
        raise RuntimeError(f"boom\n{row}")

    await bus.publish(SUBJECT, job("j1"), key="j1", correlation_id="c1")
    await bus.consume(WORKER, broken)
    dlq = await dead_letter(bus, SUBJECT)
    assert calls == [1, 2, 3]
    headers = dlq.headers or {}
    assert headers[s.HEADER_DLQ_ORIGINAL_SUBJECT] == SUBJECT
    # not a domain error: its message may quote the payload, so only the type travels
    assert headers[s.HEADER_DLQ_REASON] == "RuntimeError"
    assert headers[s.HEADER_DLQ_DELIVERIES] == "3"
    assert headers[s.HEADER_CORRELATION_ID] == "c1"
    assert headers[s.HEADER_EVENT_TYPE] == "tunewright.events.v1.TrainerJobRequested"
    assert dlq.data == job("j1").SerializeToString(deterministic=True)
    await eventually(lambda: _async_eq(consumer_state(bus), (0, 0)))
    logged = json_log.getvalue()
    assert "handler failed for good" in logged and "error=RuntimeError" in logged
    assert "123-45-6789" not in logged and "RuntimeError: <redacted>" in logged


async def test_permanent_error_dead_letters_at_once(bus: EventBus) -> None:
    calls: list[int] = []

    async def rejects(d: Delivery) -> None:
        calls.append(d.num_delivered)
        raise InvalidArgument("base model tiny:nope does not exist")

    await bus.publish(SUBJECT, job("j1"), key="j1")
    await bus.consume(WORKER, rejects)
    dlq = await dead_letter(bus, SUBJECT)
    assert calls == [1]
    assert (dlq.headers or {})[s.HEADER_DLQ_DELIVERIES] == "1"
    assert (dlq.headers or {})[s.HEADER_DLQ_REASON] == (
        "InvalidArgument[INVALID_ARGUMENT]: base model tiny:nope does not exist"
    )


async def test_message_whose_consumer_dies_on_every_delivery_still_reaches_the_dlq(
    bus: EventBus,
) -> None:
    # a raw pull subscriber that takes the message and never answers: what a worker killed
    # mid-handler looks like to the server. After max_deliver deliveries only the server's
    # advisory is left, and the watcher turns it into a dead letter.
    stop_watch = await bus.watch_max_deliveries()
    try:
        await bus.publish(SUBJECT, job("j-crash"), key="j-crash")
        psub = await bus.js.pull_subscribe_bind(consumer=WORKER, stream="TW_TRAINER_WORK")
        for _ in range(FAST["max_deliver"]):  # type: ignore[arg-type]
            (msg,) = await psub.fetch(1, timeout=5)  # redelivered after ack_wait each time
        # the server gives up (and advises) when it would deliver once more: keep a pull open
        pending_pull = asyncio.create_task(psub.fetch(1, timeout=4))
        dlq = await dead_letter(bus, SUBJECT)
        with pytest.raises(nats.errors.TimeoutError):
            await pending_pull  # and it never delivered it again
        await psub.unsubscribe()
        headers = dlq.headers or {}
        assert headers[s.HEADER_DLQ_REASON].startswith("MaxDeliveries")
        assert headers[s.HEADER_DLQ_CONSUMER] == WORKER
        assert headers[s.HEADER_DLQ_DELIVERIES] == str(FAST["max_deliver"])
        assert events_pb2.TrainerJobRequested.FromString(dlq.data).job_id == "j-crash"
        assert msg.metadata.num_delivered == FAST["max_deliver"]
    finally:
        await stop_watch()


def test_dead_letter_reason_keeps_only_domain_messages() -> None:
    assert dead_letter_reason(ValueError("row 7: jane@example.com")) == "ValueError"
    assert dead_letter_reason(InvalidArgument("bad\r\nsplit", reason="BAD_SPLIT")) == (
        "InvalidArgument[BAD_SPLIT]: bad  split"
    )
    assert len(dead_letter_reason(InvalidArgument("x" * 1000))) == 400


async def test_long_handler_is_kept_alive_by_in_progress_acks(bus: EventBus) -> None:
    deliveries: list[int] = []

    async def slow(d: Delivery) -> None:
        deliveries.append(d.num_delivered)
        await asyncio.sleep(2.5)  # 2.5 x ack_wait

    await bus.publish(SUBJECT, job("j1"), key="j1")
    await bus.consume(WORKER, slow)
    await eventually(lambda: _async_eq(consumer_state(bus), (0, 0)), within_s=6)
    assert deliveries == [1]


# The child binds the durable, performs the effect and is SIGKILLed, either after marking
# the message processed but before acking it, or between the effect and the mark.
CRASHING_CONSUMER = """
import asyncio, os, signal, sys
from dataclasses import replace
from pathlib import Path

from tunewright.core import catalog
from tunewright.core.bus import EventBus, idempotent

url, effects, when = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


class Die:
    def __init__(self, inner):
        self.inner = inner

    async def seen(self, key):
        return await self.inner.seen(key)

    async def mark(self, key):
        if when == "after-mark":
            await self.inner.mark(key)
        os.kill(os.getpid(), signal.SIGKILL)


async def effect(d):
    with effects.open("a") as f:
        f.write(d.msg_id + "\\n")


async def main():
    spec = replace(catalog.consumer("trainer-worker"), ack_wait_s=1.0)
    bus = await EventBus.connect(url, name="doomed", consumers=[spec])
    store = Die(await bus.processed_store())
    await bus.consume("trainer-worker", idempotent(effect, store))
    await asyncio.sleep(30)


asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("when", "effects_seen"),
    [
        # marked, then killed before the ack: the redelivery is skipped, the effect happened once
        ("after-mark", 1),
        # killed between effect and mark: the KV store is not in the effect's transaction,
        # so the redelivery repeats the effect. This is why idempotent() promises
        # effect-once only for a store written in the same transaction as the effect.
        ("before-mark", 2),
    ],
)
async def test_killed_consumer_message_is_redelivered(
    bus: EventBus, nats_url: str, tmp_path: Path, when: str, effects_seen: int
) -> None:
    effects = tmp_path / "effects.txt"

    async def effect(d: Delivery) -> None:
        with effects.open("a") as f:
            f.write(d.msg_id + "\n")

    await bus.publish(SUBJECT, job("j1"), key="j1")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_CONSUMER,
        nats_url,
        str(effects),
        when,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(child.communicate(), 20)
    assert child.returncode == -9, stderr.decode()
    assert effects.read_text().splitlines() == [message_id(SUBJECT, "j1")]

    deliveries: list[int] = []
    handler = idempotent(effect, await KvProcessedStore.open(bus.js))

    async def observed(d: Delivery) -> None:
        deliveries.append(d.num_delivered)
        await handler(d)

    await bus.consume(WORKER, observed)
    await eventually(lambda: deliveries == [2])  # redelivered after ack_wait
    await eventually(lambda: _async_eq(consumer_state(bus), (0, 0)))
    assert effects.read_text().splitlines() == [message_id(SUBJECT, "j1")] * effects_seen


async def test_idempotent_runs_once_per_durable_and_skips_repeats(bus: EventBus) -> None:
    # a second durable on the facts stream, declared for this test only
    bus.consumers["audit-copy"] = replace(
        catalog.consumer("registry-facts"), durable="audit-copy", **FAST
    )  # type: ignore[arg-type]
    await bus.declare()
    runs: list[str] = []
    got: list[Delivery] = []
    store = MemoryProcessedStore()

    async def record(d: Delivery) -> None:
        runs.append(d.durable)

    wrapped = idempotent(record, store)

    async def capture(d: Delivery) -> None:
        got.append(d)
        await wrapped(d)

    # facts are read by several durables: the default key is scoped by durable
    await bus.publish(s.TRAINER_JOB_SUCCEEDED, events_pb2.TrainerJobSucceeded(job_id="j"), key="j")
    await bus.consume("registry-facts", capture)
    await bus.consume("audit-copy", capture)
    await eventually(lambda: len(got) == 2)
    assert sorted(runs) == ["audit-copy", "registry-facts"]
    for d in got:  # a redelivery of either is acked without running again
        await wrapped(replace(d, num_delivered=2))
    assert len(runs) == 2


async def test_two_processes_on_one_durable_split_the_work(bus: EventBus, nats_url: str) -> None:
    other = await EventBus.connect(nats_url, name="other", consumers=fast_consumers())
    handled: list[tuple[str, str]] = []

    def worker(name: str) -> Callable[[Delivery], Awaitable[None]]:
        async def handle(d: Delivery) -> None:
            handled.append((name, d.decode(events_pb2.TrainerJobRequested).job_id))
            await asyncio.sleep(0.02)

        return handle

    try:
        await bus.consume(WORKER, worker("a"))
        await other.consume(WORKER, worker("b"))
        for i in range(20):
            await bus.publish(SUBJECT, job(f"j{i}"), key=f"j{i}")
        await eventually(lambda: len(handled) >= 20)
        await asyncio.sleep(0.2)
    finally:
        await other.close()
    jobs = [j for _, j in handled]
    assert sorted(jobs) == sorted(f"j{i}" for i in range(20))  # each exactly once
    assert {name for name, _ in handled} == {"a", "b"}


async def test_close_lets_the_in_flight_handler_finish_and_ack(nats_url: str) -> None:
    b = await EventBus.connect(nats_url, name="drain", consumers=fast_consumers())
    await b.declare()
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(d: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(d.msg_id)

    await b.publish(SUBJECT, job("j1"), key="j1")
    await b.consume(WORKER, slow, concurrency=2)
    await asyncio.wait_for(started.wait(), 5)
    await b.close()
    assert finished == [message_id(SUBJECT, "j1")]
    assert b.nc.is_closed

    check = await EventBus.connect(nats_url, name="check", consumers=fast_consumers())
    try:
        assert await consumer_state(check) == (0, 0)
        assert await stream_messages(check, "TW_TRAINER_WORK") == 0
    finally:
        await check.close()


async def test_consumer_survives_a_server_restart(nats_server: NatsServer) -> None:
    b = await EventBus.connect(
        nats_server.url, name="resilient", consumers=fast_consumers(), reconnect_wait_s=0.1
    )
    await b.declare()
    got: list[str] = []

    async def handler(d: Delivery) -> None:
        got.append(d.decode(events_pb2.TrainerJobRequested).job_id)

    await b.consume(WORKER, handler)
    await b.publish(SUBJECT, job("before"), key="before")
    await eventually(lambda: got == ["before"])

    port = int(nats_server.url.rsplit(":", 1)[1])
    nats_server.stop()
    with NatsServer(nats_server.store_dir, port=port):
        await eventually(lambda: b.nc.is_connected, within_s=10)
        await b.publish(SUBJECT, job("after"), key="after")
        await eventually(lambda: got == ["before", "after"], within_s=10)
        await b.close()


async def test_consumer_specs_are_checked(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        spec = catalog.consumer(WORKER)
        for bad, match in [
            ({"backoff_s": ()}, "backoff_s must not be empty"),
            ({"max_deliver": 0}, "max_deliver must be >= 1 or UNLIMITED"),
            ({"ack_wait_s": 0.0}, "ack_wait_s must be > 0"),
        ]:
            with pytest.raises(ValueError, match=f"consumer '{WORKER}': {match}"):
                EventBus(nc, consumers=[replace(spec, **bad)])  # type: ignore[arg-type]
        b = EventBus(nc, consumers=[spec])
        await b.declare()
        b.consumers[WORKER] = replace(spec, backoff_s=())
        with pytest.raises(ValueError, match="backoff_s must not be empty"):
            await b.consume(WORKER, _noop)
    finally:
        await nc.close()


async def test_duplicate_publish_is_logged_at_info(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunewright.core.bus")
    await bus.publish(SUBJECT, job("j1"), key="j1")
    assert not [r for r in caplog.records if "duplicate" in r.getMessage()]
    await bus.publish(SUBJECT, job("j1"), key="j1")
    (record,) = [r for r in caplog.records if "duplicate" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert SUBJECT in record.getMessage() and message_id(SUBJECT, "j1") in record.getMessage()


async def test_pull_loop_survives_an_error_outside_the_handler(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bus_module, "_LOOP_ERROR_PAUSE_S", 0.05)
    real_ack = Subscription._ack
    failures: list[str] = []

    async def ack_failing_once(self: Subscription, msg: object, delivery: Delivery) -> None:
        if not failures:
            failures.append(delivery.msg_id)
            raise RuntimeError("a bug in settling")
        await real_ack(self, msg, delivery)  # type: ignore[arg-type]

    monkeypatch.setattr(Subscription, "_ack", ack_failing_once)
    handled: list[tuple[str, int]] = []

    async def handler(d: Delivery) -> None:
        handled.append((d.decode(events_pb2.TrainerJobRequested).job_id, d.num_delivered))

    await bus.consume(WORKER, handler)
    await bus.publish(SUBJECT, job("j1"), key="j1")
    await eventually(lambda: bool(failures))
    await bus.publish(SUBJECT, job("j2"), key="j2")
    # the same loop goes on: j2 is handled, and j1 (never acked) comes back after ack_wait
    await eventually(lambda: ("j2", 1) in handled and ("j1", 2) in handled)
    await eventually(lambda: _async_eq(consumer_state(bus), (0, 0)))
    assert any("processing failed outside the handler" in r.getMessage() for r in caplog.records)


async def test_dead_letter_failure_on_the_last_delivery_is_retried_then_reported(
    nats_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bus_module, "_DLQ_RETRY_PAUSES_S", (0.05, 0.05, 0.0))
    b = await EventBus.connect(nats_url, name="t", consumers=fast_consumers(max_deliver=1))
    try:
        await b.declare()
        await b.js.delete_stream("TW_DLQ")  # every dead-letter publish now fails
        calls: list[str] = []

        async def broken(d: Delivery) -> None:
            calls.append(d.decode(events_pb2.TrainerJobRequested).job_id)
            if calls[-1] == "j1":
                raise RuntimeError("broken")

        await b.consume(WORKER, broken)
        await b.publish(SUBJECT, job("j1"), key="j1")
        await eventually(lambda: any("lost to DLQ" in r.getMessage() for r in caplog.records))
        (lost,) = [r for r in caplog.records if "lost to DLQ" in r.getMessage()]
        assert lost.levelno == logging.ERROR
        assert SUBJECT in lost.getMessage() and message_id(SUBJECT, "j1") in lost.getMessage()
        attempts = [r for r in caplog.records if "dead-letter publish failed" in r.getMessage()]
        assert len(attempts) == 3
        await b.publish(SUBJECT, job("j2"), key="j2")  # the loop is still alive
        await eventually(lambda: calls == ["j1", "j2"])
    finally:
        await b.close()


async def test_stop_timeout_cancels_and_returns_the_message(nats_url: str) -> None:
    # a long ack_wait: a quick redelivery can only come from the nak of the cancelled handler
    consumers = fast_consumers(ack_wait_s=30.0)
    b = await EventBus.connect(nats_url, name="stuck", consumers=consumers)
    await b.declare()
    started = asyncio.Event()
    cancelled: list[str] = []

    async def stuck(d: Delivery) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(d.msg_id)
            raise

    await b.publish(SUBJECT, job("j1"), key="j1")
    await b.consume(WORKER, stuck)
    await asyncio.wait_for(started.wait(), 5)
    began = time.monotonic()
    await b.close(timeout_s=0.3)
    assert time.monotonic() - began < 3
    assert cancelled == [message_id(SUBJECT, "j1")]

    other = await EventBus.connect(nats_url, name="other", consumers=consumers)
    got: list[int] = []

    async def handler(d: Delivery) -> None:
        got.append(d.num_delivered)

    try:
        await other.consume(WORKER, handler)
        await eventually(lambda: got == [2], within_s=5)
    finally:
        await other.close()


async def test_unlimited_consumer_retries_past_any_limit_and_dead_letters_only_poison(
    nats_url: str,
) -> None:
    # the fact consumers' policy (catalog.UNLIMITED, capped backoff) with tiny pauses
    spec = replace(catalog.consumer("registry-facts"), ack_wait_s=1.0, backoff_s=(0.01, 0.02, 0.05))
    assert catalog.consumer("registry-facts").max_deliver == catalog.UNLIMITED
    b = await EventBus.connect(nats_url, name="facts", consumers=[spec])
    try:
        await b.declare()
        info = await b.js.consumer_info("TW_FACTS", "registry-facts")
        assert info.config.max_deliver == -1  # the server never gives up either
        deliveries: list[int] = []
        poison: list[int] = []

        async def handler(d: Delivery) -> None:
            fact = d.decode(events_pb2.IngestDatasetRejected)
            if fact.job_id == "poison":
                poison.append(d.num_delivered)
                raise InvalidArgument("bad fact")
            deliveries.append(d.num_delivered)
            if len(deliveries) < 12:  # far past the old 5 deliveries
                raise Unavailable("database down")

        await b.consume("registry-facts", handler)
        subject = s.INGEST_DATASET_REJECTED
        await b.publish(subject, events_pb2.IngestDatasetRejected(job_id="j1"), key="j1")
        await eventually(lambda: len(deliveries) == 12, within_s=15)
        assert deliveries == list(range(1, 13))
        await b.publish(subject, events_pb2.IngestDatasetRejected(job_id="poison"), key="p")
        dlq = await dead_letter(b, subject)
        assert poison == [1]  # a PermanentError still goes to the DLQ at once
        assert (dlq.headers or {})[s.HEADER_DLQ_CONSUMER] == "registry-facts"
        assert await stream_messages(b, "TW_DLQ") == 1
    finally:
        await b.close()


async def test_publish_until_acked_rides_out_a_server_restart(nats_server: NatsServer) -> None:
    b = await EventBus.connect(nats_server.url, name="final", reconnect_wait_s=0.1)
    await b.declare()
    port = int(nats_server.url.rsplit(":", 1)[1])
    nats_server.stop()
    subject = s.TRAINER_JOB_FAILED
    fact = events_pb2.TrainerJobFailed(job_id="j1")
    publishing = asyncio.create_task(
        publish_until_acked(
            lambda: b.publish(subject, fact, key="j1"), what="j1 failed", pauses_s=(0.1, 0.2)
        )
    )
    await asyncio.sleep(3.0)  # longer than publish's own retries (about 1.6 s)
    assert not publishing.done()
    with NatsServer(nats_server.store_dir, port=port):
        ack = await asyncio.wait_for(publishing, 30)
        assert ack.stream == "TW_FACTS" and not ack.duplicate
        assert (await b.js.get_last_msg("TW_FACTS", subject)).data == fact.SerializeToString(
            deterministic=True
        )
        # not transient (a bug): raised at once, not retried
        with pytest.raises(ValueError, match="not declared"):
            await publish_until_acked(
                lambda: b.publish("tw.nope.thing.happened", fact, key="x"), what="bug"
            )
        await b.close()
