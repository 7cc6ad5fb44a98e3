"""Engine and session factory for SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=20,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while workers write; busy_timeout makes writers queue instead
    # of failing; NORMAL sync is durable across process crashes in WAL mode.
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event open transactions
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


READ_ONLY = "pixelbatch_read_only"


def _sqlite_begin_immediate(conn: Any) -> None:
    # A deferred transaction that reads then writes fails with SQLITE_BUSY at once when another
    # writer got there first; taking the write lock up front makes it wait on busy_timeout.
    # Read-only units (see ``reading``) need no lock at all: WAL gives them a snapshot.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A consistent snapshot for requests that only read.

    On SQLite every ``transaction`` queues for the one write lock, so a status poll would
    wait behind the workers recording results; a reader here never waits for a writer.
    Writing inside it is a bug (SQLite may refuse the upgrade with SQLITE_BUSY).
    """
    with factory() as session:
        session.connection(execution_options={READ_ONLY: True})
        yield session
        session.commit()  # ends the snapshot; unlike rollback it leaves loaded objects usable
