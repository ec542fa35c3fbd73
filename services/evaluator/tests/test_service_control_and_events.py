"""The evaluator service on a real nats-server and real gRPC (port 0), without a registry:
control requests published while no evaluator ran are read at start (stale ones and those of
ended runs dropped) and cancel their run when its request arrives; event streams are woken by
new events and end with the run; a crash is logged without the exception's message."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core import subjects
from tunewright.core.bus import EventBus, event_meta
from tunewright.core.errors import FailedPrecondition
from tunewright.core.logs import JsonFormatter
from tunewright.core.service import start_service
from tunewright.core.settings import load_settings
from tunewright.evaluator import server as evaluator_server
from tunewright.evaluator.server import DEFINITION, Evaluator, RunStore, _event
from tunewright.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunewright.events.v1 import events_pb2


def _cancel(run_id: str, *, age: dt.timedelta = dt.timedelta(0)) -> Any:
    request = events_pb2.EvaluatorControlRequested(
        meta=event_meta(producer="another-system"),
        run_id=run_id,
        action=events_pb2.CONTROL_ACTION_CANCEL,
        reason=f"stop {run_id}",
    )
    request.meta.occurred_at.FromDatetime(dt.datetime.now(dt.UTC) - age)
    return request


async def _until(check: Any, limit_s: float = 20.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not in time")


async def test_cancels_published_while_down_are_kept_stale_ones_dropped(
    nats_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    ended = evaluator_pb2.EvaluationRun(id="eval-done", status=common_pb2.JOB_STATUS_SUCCEEDED)
    RunStore(data_dir / "evaluator" / "runs").put(ended)
    bus = await EventBus.connect(nats_url, name="test-control")
    await bus.declare()
    try:
        # published while no evaluator runs: a fresh one, one older than the window, one of a
        # run that already ended here
        for request in (
            _cancel("eval-later"),
            _cancel("eval-old", age=dt.timedelta(hours=2)),
            _cancel("eval-done"),
        ):
            await bus.publish(
                subjects.EVALUATOR_CONTROL_REQUESTED, request, key=f"{request.run_id}:cancel"
            )
        settings = load_settings(
            DEFINITION.settings_cls,
            nats={"url": nats_url},
            grpc={"port": 0},
            data_dir=data_dir,
            evaluator={"control_window_s": 3600},
        )
        running = await start_service(DEFINITION, settings)
        app: Evaluator = running.context.resources["evaluator"]
        try:
            await _until(lambda: "eval-later" in app.cancel_requests)
            await asyncio.sleep(0.3)  # the other two were delivered before it
            assert set(app.cancel_requests) == {"eval-later"}
            assert app.cancel_requests["eval-later"][0] == "stop eval-later"

            # its request arrives later (a redelivery after a restart): the run is cancelled
            failed = await bus.nc.subscribe(subjects.EVALUATOR_RUN_FAILED)
            await bus.publish(
                subjects.EVALUATOR_RUN_REQUESTED,
                events_pb2.EvaluatorRunRequested(
                    meta=event_meta(producer="another-system"), run_id="eval-later"
                ),
                key="eval-later",
            )
            msg = await asyncio.wait_for(failed.next_msg(timeout=20), 25)
            fact = events_pb2.EvaluatorRunFailed.FromString(msg.data)
            assert fact.run_id == "eval-later" and fact.error.reason == "CANCELLED"
            assert fact.error.message == "stop eval-later"
            assert app.cancel_requests == {}
        finally:
            await running.stop()
    finally:
        await bus.close()


async def test_a_stream_is_woken_by_new_events_and_ends_with_the_run(
    nats_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        DEFINITION.settings_cls, nats={"url": nats_url}, grpc={"port": 0}, data_dir=tmp_path
    )
    running = await start_service(DEFINITION, settings)
    app: Evaluator = running.context.resources["evaluator"]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = evaluator_pb2_grpc.EvaluatorServiceStub(channel)
        run = evaluator_pb2.EvaluationRun(id="eval-s", workspace="default")
        app._transition(run, common_pb2.JOB_STATUS_QUEUED)
        app._transition(run, common_pb2.JOB_STATUS_RUNNING)
        stream = stub.StreamEvaluationRunEvents(
            evaluator_pb2.StreamEvaluationRunEventsRequest(run_id="eval-s", after_sequence=1)
        )
        seen: list[str] = []

        async def follow() -> None:
            async for response in stream:
                seen.append(response.event.message)

        following = asyncio.create_task(follow())
        await _until(lambda: seen == ["running"])
        app._add_event(_event("eval-s", "step one"))
        await _until(lambda: seen == ["running", "step one"])
        run.finished_at.GetCurrentTime()
        app._transition(run, common_pb2.JOB_STATUS_SUCCEEDED)
        await asyncio.wait_for(following, 10)
        assert seen == ["running", "step one", "succeeded"]
        # numbered in order, the last sequence kept in memory; a fresh store counts the file
        assert [e.sequence for e in app.store.events("eval-s")] == [1, 2, 3, 4]
        fresh = RunStore(tmp_path / "evaluator" / "runs")
        assert fresh.add_event(_event("eval-s", "later")).sequence == 5
        events, offset = fresh.read_events("eval-s")
        assert len(events) == 5 and fresh.read_events("eval-s", offset) == ([], offset)
    finally:
        await channel.close()
        await running.stop()


class _Boom(Exception):
    pass


#: what a library's exception may quote from a sample (the traceback shows the raise line)
SAMPLE_TEXT = "sample text: my card number is 4111 1111 1111 1111"


async def test_a_crash_is_logged_without_its_message(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    async def crash(self: Any, run_id: str, spec: Any, progress: Any) -> Any:
        raise _Boom(SAMPLE_TEXT)

    monkeypatch.setattr(evaluator_server.Evaluation, "run", crash)
    settings = load_settings(
        DEFINITION.settings_cls, nats={"url": nats_url}, grpc={"port": 0}, data_dir=tmp_path
    )
    running = await start_service(DEFINITION, settings)
    app: Evaluator = running.context.resources["evaluator"]
    try:
        with caplog.at_level(logging.ERROR, logger=evaluator_server.__name__):
            await app.on_request(
                _delivery(
                    events_pb2.EvaluatorRunRequested(meta=event_meta(producer="t"), run_id="eval-c")
                )
            )
        run = app.store.get("eval-c")
        assert run.error.reason == "EVALUATION_ERROR" and "4111" not in run.error.message
        [record] = [r for r in caplog.records if "crashed" in r.getMessage()]
        # whatever formatter the process uses: plain logging and the service's JSON one
        for text in (record.getMessage(), JsonFormatter("evaluator").format(record)):
            assert "4111" not in text
            assert "_Boom" in text and "in crash" in text  # the type and the frames stay
    finally:
        await running.stop()


def _delivery(message: Any) -> Any:
    from tunewright.core.bus import Delivery

    return Delivery(
        subject=subjects.EVALUATOR_RUN_REQUESTED,
        data=message.SerializeToString(),
        headers={subjects.HEADER_EVENT_TYPE: message.DESCRIPTOR.full_name},
        msg_id="m-1",
        correlation_id=None,
        workspace=None,
        num_delivered=1,
        durable="evaluator-worker",
        stream="TW",
        stream_seq=1,
    )


class _Outcome:
    def __init__(self, run: evaluator_pb2.EvaluationRun) -> None:
        self.run = run


@pytest.mark.parametrize("ending", ["completed", "failed"])
async def test_a_nats_blip_at_the_end_of_a_run_delays_its_fact_but_never_loses_it(
    ending: str,
    nats_url: str,
    nats_blip: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NATS goes away (for real) as the evaluation finishes, for longer than a publish retries
    async def finish_in_an_outage(self: Any, run_id: str, spec: Any, progress: Any) -> Any:
        nats_blip.begin(down_s=4.0)
        if ending == "failed":
            raise FailedPrecondition("dataset dv-x has no eval split", reason="NO_EVAL_SPLIT")
        return _Outcome(
            evaluator_pb2.EvaluationRun(
                id=run_id, workspace="default", verdict=evaluator_pb2.GateVerdict(passed=True)
            )
        )

    monkeypatch.setattr(evaluator_server.Evaluation, "run", finish_in_an_outage)
    settings = load_settings(
        DEFINITION.settings_cls,
        nats={"url": nats_url, "reconnect_time_wait_s": 0.1},
        grpc={"port": 0},
        data_dir=tmp_path,
    )
    running = await start_service(DEFINITION, settings)
    app: Evaluator = running.context.resources["evaluator"]
    try:
        request = events_pb2.EvaluatorRunRequested(meta=event_meta(producer="t"), run_id="eval-b")
        handling = asyncio.create_task(app.on_request(_delivery(request)))
        await asyncio.sleep(3.0)
        # not stored as ended while its fact is not out: a redelivery would run it again
        assert app.store.get("eval-b").status == common_pb2.JOB_STATUS_RUNNING
        assert not handling.done()
        await nats_blip.over()
        await asyncio.wait_for(handling, 60)
        expected = (
            common_pb2.JOB_STATUS_SUCCEEDED
            if ending == "completed"
            else common_pb2.JOB_STATUS_FAILED
        )
        assert app.store.get("eval-b").status == expected
        subject = (
            subjects.EVALUATOR_RUN_COMPLETED
            if ending == "completed"
            else subjects.EVALUATOR_RUN_FAILED
        )
        raw = await running.context.bus.js.get_last_msg("TW_FACTS", subject)
        fact = (
            events_pb2.EvaluatorRunCompleted.FromString(raw.data).run.id
            if ending == "completed"
            else events_pb2.EvaluatorRunFailed.FromString(raw.data).run_id
        )
        assert fact == "eval-b"
    finally:
        await running.stop()
