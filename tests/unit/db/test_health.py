"""database_status: the answer /readyz gives for each state of the database."""

from __future__ import annotations

from pathlib import Path

from pixelbatch.db.engine import make_engine
from pixelbatch.db.health import database_status
from pixelbatch.db.migrate import upgrade


def test_a_fresh_database_is_unmigrated_until_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    try:
        assert database_status(engine) == "unmigrated"
        upgrade(engine)
        assert database_status(engine) == "ready"
    finally:
        engine.dispose()


def test_a_database_that_cannot_be_opened_is_unreachable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite3'}")
    try:
        assert database_status(engine) == "unreachable"
    finally:
        engine.dispose()
