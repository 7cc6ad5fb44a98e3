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
