"""The database tests' default: a migrated SQLite database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests import support


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with support.migrated_sessions(f"sqlite:///{tmp_path / 'db.sqlite3'}") as factory:
        yield factory
