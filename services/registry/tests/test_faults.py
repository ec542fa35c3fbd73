"""The registry under faults, with real parts: its database unavailable for longer than the old
delivery limit would wait (SQLite locked by another writer; PostgreSQL refusing connections to
the database), bounded database waits (statement, connect and busy timeouts) and the
stage-deadline loop. The old policy dead-lettered a fact after 5 deliveries (backoff 1/5/30/120
s, ~2.5 min); the tests scale the backoff down and keep the catalog's delivery policy."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import sqlite3
import time
from collections.abc import Iterator

import psycopg
import pytest
from registry_builders import curated, dataset_version
from sqlalchemy import func, select, text

from tunewright.core import catalog, subjects
from tunewright.core.bus import Delivery, EventBus
from tunewright.core.catalog import ConsumerSpec
from tunewright.core.errors import Unavailable
from tunewright.registry import models, pipelines
from tunewright.registry.db import Database, migrate
from tunewright.registry.outbox import OutboxPublisher
from tunewright.registry.server import Registry

DOWN_S = 4.0
# the old limit, what the fact consumer had before it retried without one
OLD_MAX_DELIVER = ConsumerSpec("S", "d").max_deliver


def _count(db: Database, model: type[models.Base]) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@contextlib.contextmanager
def _database_down(url: str) -> Iterator[None]:
    """Make the database unusable for the registry, for real, until the block ends."""
    if url.startswith("sqlite"):
        # another writer holds the lock: every write waits the busy timeout, then fails
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    base, name = url.rsplit("/", 1)
    # the server's maintenance database, as the same user (the fixture's admin)
    admin_url = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        # no new connections, and the registry's pooled ones are cut
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


async def test_a_fact_waits_out_a_database_outage_and_is_applied_once(
    nats_url: str, db_url: str
) -> None:
    # the catalog's policy for registry-facts (no delivery limit), with backoffs in ms
    spec = dataclasses.replace(
        catalog.consumer("registry-facts"), ack_wait_s=5.0, backoff_s=(0.05, 0.1, 0.2)
    )
    assert spec.max_deliver == catalog.UNLIMITED
    db = Database(db_url, connect_timeout_s=2, statement_timeout_s=0.3)
    migrate(db.engine)
    bus = await EventBus.connect(nats_url, name="registry-under-test", consumers=[spec])
    outcomes: list[tuple[int, str]] = []
    try:
        await bus.declare()
        app = Registry(db=db, outbox=OutboxPublisher(db, bus.publish))

        async def recording(delivery: Delivery) -> None:
            try:
                await app.on_fact(delivery)
            except Exception as exc:
                outcomes.append((delivery.num_delivered, type(exc).__name__))
                raise
            outcomes.append((delivery.num_delivered, "applied"))

        await bus.consume("registry-facts", recording)
        fact = curated("job-1", dataset_version("dv-1"))
        with _database_down(db_url):
            started = time.monotonic()
            await bus.publish(subjects.INGEST_DATASET_CURATED, fact, key="job-1")
            await asyncio.sleep(DOWN_S)
            down_s = time.monotonic() - started
            failed = len(outcomes)
        deadline = time.monotonic() + 30
        while not outcomes or outcomes[-1][1] != "applied":
            assert time.monotonic() < deadline, outcomes
            await asyncio.sleep(0.05)
        # the old limit would have dead-lettered it after OLD_MAX_DELIVER failures
        assert failed > OLD_MAX_DELIVER, (down_s, outcomes)
        assert {name for _, name in outcomes[:-1]} == {"Unavailable"}
        assert [n for n, _ in outcomes] == list(range(1, len(outcomes) + 1))
        print(
            f"database down {down_s:.1f}s: {failed} failed deliveries, applied on delivery "
            f"{outcomes[-1][0]}"
        )
        assert _count(db, models.DatasetVersion) == 1
        assert _count(db, models.ProcessedMessage) == 1
        assert (await bus.js.stream_info("TW_DLQ")).state.messages == 0
        assert [name for _, name in outcomes].count("applied") == 1
    finally:
        await bus.close()
        db.dispose()


def test_every_database_wait_is_bounded(db_url: str) -> None:
    db = Database(db_url, connect_timeout_s=1, statement_timeout_s=0.5)
    # a migration is not held to the statement timeout (it may rewrite big tables)
    strict = Database(db_url, statement_timeout_s=0.001)
    migrate(strict.engine)
    strict.dispose()
    try:
        if db_url.startswith("sqlite"):
            with _database_down(db_url):
                started = time.monotonic()
                with pytest.raises(Unavailable) as locked, db.transaction() as session:
                    session.add(models.Workspace(name="w1"))
                assert 0.4 < time.monotonic() - started < 5
                assert locked.value.reason == "DATABASE_UNAVAILABLE"
            return
        with db.transaction() as session:
            assert session.scalar(text("SHOW statement_timeout")) == "500ms"
        started = time.monotonic()
        with pytest.raises(Unavailable, match="QueryCanceled"), db.transaction() as session:
            session.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 3
    finally:
        db.dispose()
    # a server that accepts the TCP connection and never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        hung = Database(
            f"postgresql+psycopg://tw@127.0.0.1:{port}/nowhere",
            connect_timeout_s=1,
            statement_timeout_s=1,
        )
        started = time.monotonic()
        with pytest.raises(Unavailable), hung.transaction() as session:
            session.execute(text("SELECT 1"))
        assert time.monotonic() - started < 5
        hung.dispose()


async def test_the_deadline_loop_fails_a_run_whose_fact_never_comes(db: Database) -> None:
    spec = "name: lost\nstages:\n  - {name: curate, kind: ingest, spec: {dataset: tickets}}\n"

    async def publish(*args: object, **kwargs: object) -> None:
        return None

    app = Registry(
        db=db, outbox=OutboxPublisher(db, publish), stage_deadline_s=0.5, deadline_check_s=0.1
    )
    with db.transaction() as session:
        run, _ = pipelines.create_run(session, run_id="pipe-lost", spec_yaml=spec, parameters={})
        pipelines.advance(session, run)
    loop = asyncio.create_task(app.deadlines())
    try:
        deadline = time.monotonic() + 10
        while _status(db, "pipe-lost") == "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
    with db.transaction() as session:
        run = pipelines.get_run(session, "pipe-lost")
        assert run.status == "failed"
        assert run.error is not None and run.error["reason"] == "STAGE_DEADLINE_EXCEEDED"


def _status(db: Database, run_id: str) -> str:
    with db.transaction() as session:
        return pipelines.get_run(session, run_id).status
