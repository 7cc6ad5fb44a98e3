"""The migration chain: a revision that has been released keeps its id and its place, so a
database stamped with it upgrades (Alembic cannot upgrade from an id it no longer knows)."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from pixelbatch.db.engine import make_engine
from pixelbatch.db.migrate import alembic_config, current_revision, head_revision, upgrade

# Every revision on a landed main, oldest first. Append; never rename or reorder.
RELEASED = [
    "0001",
    "0002",
    "0003",
    "0004_batch_request_details",
    "0005_batch_priority",
    "0006_output_urls_expiry",
    "0007_kept_original",
    "0008_not_smaller_counts",
]


def test_released_revisions_keep_their_ids_and_order() -> None:
    chain = [r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    assert list(reversed(chain))[: len(RELEASED)] == RELEASED


def test_the_head_the_code_checks_for_is_alembics_head() -> None:
    """Processes check the revision without Alembic (HEAD_REVISION): a new migration must
    move it, or every replica would refuse a database that is up to date."""
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == head_revision()


def test_a_database_at_the_last_released_revision_upgrades_to_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        assert current_revision(engine) is None  # never migrated: no version table
        upgrade(engine, RELEASED[-1])
        assert current_revision(engine) == RELEASED[-1]
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
