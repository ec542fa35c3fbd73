"""Migrations apply from empty on SQLite and PostgreSQL, match the models, and keep the audit
log append-only in the database itself."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from tunewright.registry.db import Database, alembic_config, migrate
from tunewright.registry.models import Base


def test_migrations_apply_from_empty_and_match_the_models(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert inspect(database.engine).get_table_names() == []
        migrate(database.engine)
        tables = set(inspect(database.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        migrate(database.engine)  # again: nothing to do
    finally:
        database.dispose()


def test_downgrade_to_empty_and_back(db_url: str) -> None:
    from alembic import command

    database = Database(db_url)
    try:
        migrate(database.engine)
        command.downgrade(alembic_config(database.engine), "base")
        assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
        migrate(database.engine)
    finally:
        database.dispose()


def test_audit_log_refuses_update_and_delete(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (at, workspace, actor, action, subject_kind, subject_id, "
                "reason, details) VALUES (CURRENT_TIMESTAMP, 'w', 'me', 'promote', 'model', 'm1', '', '{}')"
            )
        )
    for statement in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
