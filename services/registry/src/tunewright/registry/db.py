"""Database engine, sessions and migrations.

SQLite by default (``<data_dir>/registry.db``), PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). The schema is created and upgraded only by Alembic
(:func:`migrate`), on both, from empty.

Every wait on the database is bounded, so an unreachable or stuck database fails a call
instead of hanging it (and the fact consumer that made it, which then retries): a connect
timeout and a statement timeout on PostgreSQL (TCP keepalives notice a server that vanished
mid-query), the busy timeout on SQLite (how long a writer waits for another's lock). A
transaction that fails because the database is unreachable, timed out or locked raises
:class:`~tunewright.core.errors.Unavailable` (retryable); one whose values the database
refuses raises :class:`~tunewright.core.errors.InvalidArgument` (retrying cannot help).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker

from tunewright.core.errors import InvalidArgument, Unavailable

MIGRATIONS = Path(__file__).parent / "migrations"

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_STATEMENT_TIMEOUT_S = 30.0


def make_engine(
    url: str | URL,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
) -> Engine:
    """An engine whose waits are bounded; ``statement_timeout_s=0`` means none (migrations)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            # the sqlite3 busy timeout: a writer waits this long for another writer's lock
            connect_args={
                "check_same_thread": False,
                "timeout": statement_timeout_s or DEFAULT_STATEMENT_TIMEOUT_S,
            },
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the single writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {
            # libpq takes whole seconds
            "connect_timeout": max(1, math.ceil(connect_timeout_s)),
            "options": f"-c statement_timeout={int(statement_timeout_s * 1000)}",
            # a server that disappears mid-query (host down, partition) sends no error: the
            # socket would wait for the kernel's TCP timeout, minutes; keepalives notice it
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
    return create_engine(
        url,
        pool_pre_ping=True,
        # waiting for a free pooled connection is bounded too
        pool_timeout=connect_timeout_s,
        connect_args=connect_args,
    )


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (creates it from empty).

    On PostgreSQL through an engine without the statement timeout: a migration may rewrite a
    large table for longer than any request should take.
    """
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), revision)
        return
    unbounded = make_engine(engine.url, statement_timeout_s=0)
    try:
        command.upgrade(alembic_config(unbounded), revision)
    finally:
        unbounded.dispose()


def _driver_error(error: exc.DBAPIError) -> str:
    """The driver's error class (``QueryCanceled``, ``OperationalError``): never its message,
    which may quote the statement's values."""
    return type(error.orig).__name__ if error.orig is not None else type(error).__name__


class Database:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.engine = make_engine(
            url, connect_timeout_s=connect_timeout_s, statement_timeout_s=statement_timeout_s
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits together, or not at all.

        :raises Unavailable: the database is unreachable, timed out or locked (retry later).
        :raises InvalidArgument: the database refused a value (too long, wrong type).
        """
        try:
            with self._sessions() as session, session.begin():
                yield session
        except (exc.OperationalError, exc.InterfaceError) as error:
            raise Unavailable(
                f"database unavailable ({_driver_error(error)})", reason="DATABASE_UNAVAILABLE"
            ) from error
        except exc.TimeoutError as error:  # no pooled connection came free in time
            raise Unavailable(
                f"database unavailable ({type(error).__name__})", reason="DATABASE_UNAVAILABLE"
            ) from error
        except exc.DataError as error:
            raise InvalidArgument(
                f"the database refused a value ({_driver_error(error)})", reason="DATABASE_REFUSED"
            ) from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise Unavailable(
                    f"database connection lost ({_driver_error(error)})",
                    reason="DATABASE_UNAVAILABLE",
                ) from error
            raise

    def dispose(self) -> None:
        self.engine.dispose()
