"""`tunewright dlq list / redrive` against a real nats-server: a request a worker rejected is
listed without its payload, redriven to its subject (by subject filter) and handled."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from tunewright.cli.dlq import dlq
from tunewright.core import catalog, subjects
from tunewright.core.bus import Delivery, EventBus, message_id
from tunewright.core.errors import InvalidArgument
from tunewright.events.v1 import events_pb2

FAST = {"ack_wait_s": 1.0, "backoff_s": (0.05,)}


async def _dead_letter_two(url: str) -> None:
    consumers = [replace(c, **FAST) for c in catalog.CONSUMERS]  # type: ignore[arg-type]
    bus = await EventBus.connect(url, name="test", consumers=consumers)
    try:
        await bus.declare()

        async def reject(d: Delivery) -> None:
            raise InvalidArgument("base model tiny:nope does not exist")

        await bus.consume("trainer-worker", reject)
        await bus.consume("evaluator-worker", reject)
        secret = "jane@example.com"  # a payload the listing must never show
        await bus.publish(
            subjects.TRAINER_JOB_REQUESTED,
            events_pb2.TrainerJobRequested(job_id="j1", spec={"output_model": secret}),
            key="j1",
        )
        await bus.publish(
            subjects.EVALUATOR_RUN_REQUESTED,
            events_pb2.EvaluatorRunRequested(run_id="e1"),
            key="e1",
        )
        for _ in range(200):
            if (await bus.js.stream_info("TW_DLQ")).state.messages == 2:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the requests were not dead-lettered")
    finally:
        await bus.close()


async def _handle_redriven(url: str) -> list[str]:
    consumers = [replace(c, **FAST) for c in catalog.CONSUMERS]  # type: ignore[arg-type]
    bus = await EventBus.connect(url, name="test", consumers=consumers)
    got: list[str] = []

    async def accept(d: Delivery) -> None:
        got.append(d.msg_id)

    try:
        await bus.consume("trainer-worker", accept)
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
        return got
    finally:
        await bus.close()


def test_list_and_redrive(nats_url: str, tmp_path: Path) -> None:
    asyncio.run(_dead_letter_two(nats_url))
    runner = CliRunner()
    common = ["--nats-url", nats_url, "--data-dir", str(tmp_path / "state")]

    listed = runner.invoke(dlq, ["list", "--json", *common])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["subject"], r["consumer"]) for r in rows] == [
        (subjects.TRAINER_JOB_REQUESTED, "trainer-worker"),
        (subjects.EVALUATOR_RUN_REQUESTED, "evaluator-worker"),
    ]
    assert rows[0]["reason"].startswith("InvalidArgument[INVALID_ARGUMENT]")
    assert "jane@example.com" not in listed.output
    table = runner.invoke(dlq, ["list", "--subject", "tw.trainer.>", *common])
    assert table.exit_code == 0 and "dead letters (1)" in table.output, table.output

    bad = runner.invoke(dlq, ["redrive", "--subject", "trainer.job.requested", *common])
    assert bad.exit_code == 2 and "not a tunewright subject" in bad.output

    redriven = runner.invoke(dlq, ["redrive", "--subject", subjects.TRAINER_JOB_REQUESTED, *common])
    assert redriven.exit_code == 0, redriven.output
    assert "1 dead letter(s) redriven" in redriven.output
    assert asyncio.run(_handle_redriven(nats_url)) == [
        message_id(subjects.TRAINER_JOB_REQUESTED, "j1")
    ]
    left = json.loads(runner.invoke(dlq, ["list", "--json", *common]).output)
    assert [r["subject"] for r in left] == [subjects.EVALUATOR_RUN_REQUESTED]
