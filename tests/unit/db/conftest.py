"""The database tests' default: a migrated SQLite database per test (a copy of the worker's
migrated template, so no test runs the migrations itself)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests import support


@pytest.fixture
def sessions(migrated_sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with support.sessions(migrated_sqlite_url) as factory:
        yield factory


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions_on_both(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    """A migrated database of each kind in turn: for SQL whose meaning or plan could differ
    between them (a module asks for it as its ``sessions``)."""
    fixture = "migrated_sqlite_url" if request.param == "sqlite" else "migrated_pg_url"
    url: str = request.getfixturevalue(fixture)
    with support.sessions(url) as factory:
        yield factory
