"""Engine and session factory for SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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


# One per SQLite engine: this process's writers queue here, in order and woken at once,
# instead of in SQLite's busy handler, which sleeps 1, 2, 5 ... 100 ms between tries and
# left the download threads waiting on each other for most of a small image's time.
_WRITE_LOCKS: dict[int, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(factory: sessionmaker[Session]) -> AbstractContextManager[Any]:
    engine = factory.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "sqlite":
        return nullcontext()
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(id(engine), threading.RLock())


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with _write_lock(factory), factory() as session, session.begin():
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
