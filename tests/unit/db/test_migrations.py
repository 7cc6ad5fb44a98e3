"""The migration chain: a revision that has been released keeps its id and its place, so a
database stamped with it upgrades (Alembic cannot upgrade from an id it no longer knows)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db.engine import make_engine
from pixelbatch.db.migrate import (
    alembic_config,
    autogenerate_includes,
    current_revision,
    head_revision,
    upgrade,
)
from pixelbatch.db.models import Base
from tests import support

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
    "0009_error_code_index",
    "0010_batch_status_output_index",
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


def _foreign_keys(engine: Engine) -> set[tuple[str, str, str]]:
    """(table, column, referred table) of every foreign key the database has."""
    inspector = inspect(engine)
    return {
        (table, column, key["referred_table"])
        for table in inspector.get_table_names()
        for key in inspector.get_foreign_keys(table)
        for column in key["constrained_columns"]
    }


def _model_foreign_keys() -> set[tuple[str, str, str]]:
    return {
        (table.name, key.parent.name, key.column.table.name)
        for table in Base.metadata.sorted_tables
        for key in table.foreign_keys
    }


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


CHECKED_KEYS = {
    ("products", "batch_id", "batches"),
    ("images", "batch_id", "batches"),
    ("images", "product_id", "products"),
}


def test_postgresql_checks_no_foreign_key_per_catalog_row() -> None:
    """Migration 0011 drops the keys PostgreSQL checked for each row of a new catalog, and
    only those: the database then has exactly the models' keys, and a downgrade restores
    them."""
    with support.postgres_database() as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0010_batch_status_output_index")
            before = _foreign_keys(engine)
            assert before >= CHECKED_KEYS
            upgrade(engine)
            after = _foreign_keys(engine)
            assert after == before - CHECKED_KEYS == _model_foreign_keys()
            assert ("images", "duplicate_of", "images") in after
            _downgrade(engine, "0010_batch_status_output_index")
            assert _foreign_keys(engine) == before
        finally:
            engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_models_match_the_migrated_schema(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """What autogenerate sees between the models and a database migrated to head: nothing,
    on both databases (SQLite's extra keys are left out on purpose, see
    ``migrate.SQLITE_ONLY_KEYS``). A model changed without its migration fails here."""
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite3'}"
        if database == "sqlite"
        else request.getfixturevalue("migrated_pg_url")
    )
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": autogenerate_includes},
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_sqlite_keeps_its_foreign_keys(tmp_path: Path) -> None:
    """SQLite cannot drop a key without rebuilding the table, and rebuilding ``products``
    would cascade its delete to the images; its checks cost nothing measurable there."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        upgrade(engine)
        assert _foreign_keys(engine) == _model_foreign_keys() | CHECKED_KEYS
    finally:
        engine.dispose()


# The two shapes of lookup the code makes by ``duplicate_of``: the recording of an image's
# result for its repeats (a value), and the ``has_copies`` flag of a claim (correlated).
REPEAT_LOOKUPS = (
    "SELECT id FROM images WHERE duplicate_of = 7 AND status = 'PENDING'",
    "SELECT i.id, EXISTS (SELECT 1 FROM images c WHERE c.duplicate_of = i.id)"
    " FROM images i WHERE i.id = 7",
)


@pytest.mark.parametrize("lookup", REPEAT_LOOKUPS)
def test_repeats_are_found_through_an_index_of_repeats_only(
    sessions_on_both: sessionmaker[Session], lookup: str
) -> None:
    """``ix_images_duplicate_of`` holds only the images that repeat a URL (a new catalog's
    other rows add no entry to it), and still serves both shapes of lookup by it."""
    with sessions_on_both() as session:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            where = conn.exec_driver_sql(
                "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i JOIN pg_class c"
                " ON c.oid = i.indexrelid WHERE c.relname = 'ix_images_duplicate_of'"
            ).scalar_one()
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = list(conn.exec_driver_sql(f"EXPLAIN {lookup}").scalars())
        else:
            where = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_images_duplicate_of'"
            ).scalar_one()
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {lookup}")]
        assert "duplicate_of IS NOT NULL" in where
        assert "ix_images_duplicate_of" in " ".join(plan), plan
