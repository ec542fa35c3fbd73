"""Registry test fixtures: every test that takes ``db_url`` runs on SQLite and on the real
PostgreSQL server of this machine (127.0.0.1:5432, trust auth), each in a fresh database
migrated from empty. Without a reachable PostgreSQL the PostgreSQL half is skipped, unless
``TUNEWRIGHT_REQUIRE_POSTGRES=1`` (CI) makes that a failure."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tunewright.registry.db import Database, migrate

PG_ADMIN = os.environ.get(
    "TUNEWRIGHT_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN}: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    problem = _pg_available()
    if problem:
        if os.environ.get("TUNEWRIGHT_REQUIRE_POSTGRES") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"tw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate(database.engine)
    yield database
    database.dispose()
