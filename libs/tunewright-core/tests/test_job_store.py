"""The shared SQLite job store: idempotent create, paging, events with sequences, cancel flag.

Real SQLite files under tmp_path; ``SynthJob`` stands in for any job message.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunewright.common.v1 import common_pb2
from tunewright.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tunewright.core.job_store import JobStore, now_ts
from tunewright.synth.v1 import synth_pb2


def _store(path: Path, extra_columns: tuple[str, ...] = ()) -> JobStore[synth_pb2.SynthJob]:
    return JobStore(path, synth_pb2.SynthJob.FromString, kind="synth", extra_columns=extra_columns)


def _job(job_id: str, workspace: str = "acme") -> synth_pb2.SynthJob:
    return synth_pb2.SynthJob(
        id=job_id, workspace=workspace, status=common_pb2.JOB_STATUS_QUEUED, created_at=now_ts()
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore[synth_pb2.SynthJob]]:
    jobs = _store(tmp_path / "svc" / "jobs.sqlite")
    yield jobs
    jobs.close()


def test_create_is_idempotent_by_request_key_and_id(store: JobStore[synth_pb2.SynthJob]) -> None:
    job, created = store.create(_job("j1"), request_key="acme\nreq-1")
    assert created and job.id == "j1"
    again, created = store.create(_job("j2"), request_key="acme\nreq-1")
    assert not created and again.id == "j1"
    same_id, created = store.create(_job("j1"))
    assert not created and same_id.id == "j1"
    # no key (None or empty) never matches another job's missing key
    assert store.create(_job("j3"), request_key="")[1]
    assert store.create(_job("j4"))[1]
    assert [j.id for j in store.list_jobs("acme")] == ["j1", "j3", "j4"]


def test_get_find_and_the_kinds_not_found_reason(store: JobStore[synth_pb2.SynthJob]) -> None:
    store.create(_job("j1"))
    assert store.get("j1").workspace == "acme"
    assert store.find("nope") is None
    with pytest.raises(NotFound) as err:
        store.get("nope")
    assert err.value.reason == "SYNTH_JOB_NOT_FOUND" and "synth job 'nope'" in str(err.value)


def test_set_status_records_history_and_finish(store: JobStore[synth_pb2.SynthJob]) -> None:
    job, _ = store.create(_job("j1"))
    store.set_status(job, common_pb2.JOB_STATUS_RUNNING, "started")
    assert not store.get("j1").HasField("finished_at")
    store.set_status(job, common_pb2.JOB_STATUS_FAILED, "boom")
    saved = store.get("j1")
    assert saved.status == common_pb2.JOB_STATUS_FAILED and saved.HasField("finished_at")
    assert [(t.status, t.reason) for t in saved.history] == [
        (common_pb2.JOB_STATUS_RUNNING, "started"),
        (common_pb2.JOB_STATUS_FAILED, "boom"),
    ]
    # the status column follows the message, so a status filter finds it
    assert [j.id for j in store.list_jobs("acme", statuses=[common_pb2.JOB_STATUS_FAILED])] == [
        "j1"
    ]
    assert store.list_jobs("acme", statuses=[common_pb2.JOB_STATUS_QUEUED]) == []


def test_list_page_walks_a_workspace_with_tokens(store: JobStore[synth_pb2.SynthJob]) -> None:
    for i in range(5):
        store.create(_job(f"j{i}"))
    store.create(_job("other", workspace="globex"))
    seen, token = [], ""
    while True:
        jobs, page = store.list_page(
            "acme", [], common_pb2.PageRequest(page_size=2, page_token=token)
        )
        seen += [j.id for j in jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"j{i}" for i in range(5)]
    everything, page = store.list_page("acme", [], common_pb2.PageRequest())
    assert len(everything) == 5 and page.next_page_token == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        store.list_page("acme", [], common_pb2.PageRequest(page_token="not-a-number"))


def test_cancel_flag_only_for_unfinished_jobs(store: JobStore[synth_pb2.SynthJob]) -> None:
    store.create(_job("j1"))
    assert not store.cancel_requested("j1")
    assert store.request_cancel("j1").id == "j1"
    assert store.cancel_requested("j1") and not store.cancel_requested("missing")
    done, _ = store.create(_job("j2"))
    store.set_status(done, common_pb2.JOB_STATUS_SUCCEEDED)
    with pytest.raises(FailedPrecondition, match="synth job j2 has already finished") as err:
        store.request_cancel("j2")
    assert err.value.reason == "JOB_FINISHED" and not store.cancel_requested("j2")
    with pytest.raises(NotFound):
        store.request_cancel("missing")


def test_events_get_per_job_sequences_and_resume(store: JobStore[synth_pb2.SynthJob]) -> None:
    for job_id in ("a", "b", "a"):
        store.add_event(common_pb2.JobEvent(job_id=job_id, message=f"to {job_id}"))
    assert [e.sequence for e in store.events("a")] == [1, 2]
    assert [e.sequence for e in store.events("b")] == [1]
    (last,) = store.events("a", after_sequence=1)
    assert last.sequence == 2 and last.HasField("created_at")


async def test_follow_events_until_the_job_finishes(store: JobStore[synth_pb2.SynthJob]) -> None:
    job, _ = store.create(_job("j1"))
    store.add_event(common_pb2.JobEvent(job_id="j1", message="one"))
    store.add_event(common_pb2.JobEvent(job_id="j1", message="two"))

    async def finish_later() -> None:
        await asyncio.sleep(0.05)
        store.add_event(common_pb2.JobEvent(job_id="j1", message="three"))
        store.set_status(job, common_pb2.JOB_STATUS_SUCCEEDED)

    finisher = asyncio.create_task(finish_later())
    got = [e.message async for e in store.follow_events("j1", after_sequence=1, poll_s=0.01)]
    await finisher
    assert got == ["two", "three"]
    with pytest.raises(NotFound):
        async for _ in store.follow_events("missing"):
            pass


def test_extra_columns_and_reopening_keep_the_data(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    first = _store(path, extra_columns=("note BLOB",))
    first.create(_job("j1"), request_key="k")
    first._query("UPDATE jobs SET note = ? WHERE id = ?", (b"kept", "j1"))
    first.close()
    second = _store(path, extra_columns=("note BLOB",))
    assert second._query("SELECT note FROM jobs WHERE id = ?", ("j1",)) == [(b"kept",)]
    assert second.create(_job("j2"), request_key="k") == (second.get("j1"), False)
    second.close()
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")]
    assert columns[-2:] == ["job", "note"]
