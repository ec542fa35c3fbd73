"""Dead letters against a real nats-server: listing, redriving to the original subject, and
exactly-once handling kept across the round trip (the original message id survives)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tunewright.core import catalog
from tunewright.core import subjects as s
from tunewright.core.bus import Delivery, EventBus, MemoryProcessedStore, idempotent, message_id
from tunewright.core.dead_letters import DLQ_STREAM, list_dead_letters, redrive
from tunewright.core.errors import InvalidArgument
from tunewright.events.v1 import events_pb2

FAST = {"ack_wait_s": 1.0, "backoff_s": (0.05,)}
FACT = s.INGEST_DATASET_CURATED


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    consumers = [replace(c, **FAST) for c in catalog.CONSUMERS]  # type: ignore[arg-type]
    b = await EventBus.connect(nats_url, name="test", consumers=consumers)
    await b.declare()
    yield b
    await b.close()


async def _until(check: object, within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _dlq_count(bus: EventBus) -> int:
    return (await bus.js.stream_info(DLQ_STREAM)).state.messages


async def test_list_and_redrive_by_subject_keep_the_original_message_id(bus: EventBus) -> None:
    broken = {"on": True}
    seen: list[tuple[str, str, int]] = []
    redelivered: list[dict[str, str]] = []

    async def worker(d: Delivery) -> None:
        seen.append((d.msg_id, d.headers[s.HEADER_MSG_ID], d.num_delivered))
        redelivered.append(dict(d.headers))
        if broken["on"]:
            raise InvalidArgument("base model tiny:nope does not exist")

    async def facts(d: Delivery) -> None:
        raise InvalidArgument("bad fact")

    await bus.consume("trainer-worker", worker)
    await bus.consume("registry-facts", facts)
    await bus.publish(
        s.TRAINER_JOB_REQUESTED,
        events_pb2.TrainerJobRequested(job_id="j1"),
        key="j1",
        correlation_id="c1",
    )
    await bus.publish(FACT, events_pb2.IngestDatasetCurated(job_id="i1"), key="i1")
    await _until(lambda: len(seen) == 1)
    for _ in range(100):
        if await _dlq_count(bus) == 2:
            break
        await asyncio.sleep(0.05)

    letters = await list_dead_letters(bus.js)
    assert [(x.original_subject, x.consumer) for x in letters] == [
        (s.TRAINER_JOB_REQUESTED, "trainer-worker"),
        (FACT, "registry-facts"),
    ]
    request = letters[0]
    original = message_id(s.TRAINER_JOB_REQUESTED, "j1")
    assert request.msg_id == original and request.deliveries == 1 and request.redrives == 0
    assert request.reason.startswith("InvalidArgument[INVALID_ARGUMENT]: base model")
    assert [x.seq for x in await list_dead_letters(bus.js, subject=FACT)] == [letters[1].seq]
    assert await list_dead_letters(bus.js, subject="tw.trainer.>") == [request]

    broken["on"] = False  # the cause is fixed
    (done,) = await redrive(bus.js, subject=s.TRAINER_JOB_REQUESTED)
    assert done.dead_letter.seq == request.seq and not done.duplicate
    await _until(lambda: len(seen) == 2)
    # consumers know it by its first id; JetStream stored it under a new one
    assert seen[1] == (original, f"redrive-1:{original}", 1)
    remaining = await list_dead_letters(bus.js)
    assert [x.original_subject for x in remaining] == [FACT]  # the other stays
    headers = redelivered[-1]
    assert headers[s.HEADER_CORRELATION_ID] == "c1" and headers[s.HEADER_REDRIVES] == "1"
    assert not any(k.startswith("Tw-Dlq-") for k in headers)
    assert await redrive(bus.js, subject=s.TRAINER_JOB_REQUESTED) == []  # nothing left there


async def test_redrive_is_applied_once_by_consumers_that_had_processed_it(
    bus: EventBus,
) -> None:
    # registry-facts dead-letters a fact that monitor-facts handled; after the redrive the
    # registry applies it and the monitor's processed marks skip it
    store = MemoryProcessedStore()
    applied: dict[str, int] = {"registry-facts": 0, "monitor-facts": 0}
    registry_broken = {"on": True}

    def counting(durable: str) -> object:
        async def handle(d: Delivery) -> None:
            if durable == "registry-facts" and registry_broken["on"]:
                raise InvalidArgument("unknown dataset kind")
            applied[durable] += 1

        return idempotent(handle, store)

    await bus.consume("registry-facts", counting("registry-facts"))  # type: ignore[arg-type]
    await bus.consume("monitor-facts", counting("monitor-facts"))  # type: ignore[arg-type]
    await bus.publish(FACT, events_pb2.IngestDatasetCurated(job_id="i1"), key="i1")
    await _until(lambda: applied["monitor-facts"] == 1)
    for _ in range(100):
        if await _dlq_count(bus) == 1:
            break
        await asyncio.sleep(0.05)
    (letter,) = await list_dead_letters(bus.js)

    registry_broken["on"] = False
    # a redrive that crashed after publishing and before removing the dead letter: the copy
    # is stored, the dead letter still there
    await bus.js.publish(letter.original_subject, letter.data, headers=letter.redrive_headers())
    (again,) = await redrive(bus.js)
    assert again.duplicate  # the repeated redrive was dropped by JetStream
    await _until(lambda: applied["registry-facts"] == 1)
    await asyncio.sleep(0.5)
    assert applied == {"registry-facts": 1, "monitor-facts": 1}
    assert await _dlq_count(bus) == 0


async def test_a_redriven_message_that_fails_again_is_dead_lettered_again(
    bus: EventBus,
) -> None:
    calls: list[int] = []

    async def always_broken(d: Delivery) -> None:
        calls.append(int(d.headers.get(s.HEADER_REDRIVES, "0")))
        raise InvalidArgument("still broken")

    await bus.consume("trainer-worker", always_broken)
    await bus.publish(s.TRAINER_JOB_REQUESTED, events_pb2.TrainerJobRequested(job_id="j"), key="j")
    await _until(lambda: calls == [0])
    for _ in range(100):
        if await _dlq_count(bus) == 1:
            break
        await asyncio.sleep(0.05)
    await redrive(bus.js)
    await _until(lambda: calls == [0, 1])
    # not dropped as a duplicate of its first dead letter (removed, but inside TW_DLQ's
    # duplicate window): it is there again, with its redrive count
    for _ in range(100):
        letters = await list_dead_letters(bus.js)
        if letters:
            break
        await asyncio.sleep(0.05)
    (letter,) = letters
    assert letter.redrives == 1 and letter.msg_id == message_id(s.TRAINER_JOB_REQUESTED, "j")
    await redrive(bus.js, seqs={letter.seq})
    await _until(lambda: calls == [0, 1, 2])
