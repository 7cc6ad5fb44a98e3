"""Schema migrations through Alembic, callable from the app, the CLI and tests.

Alembic is imported only to migrate: every API replica and worker checks its database's
revision at start, and importing Alembic for that cost ~10 MB in each process, counted
again in each Celery child.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, String, column, inspect, select, table

from pixelbatch.errors import PixelbatchError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions: what a database must be at for this code.
# A new migration moves it (tests/unit/db/test_migrations.py holds it to Alembic's head).
HEAD_REVISION = "0011_cheaper_catalog_inserts"
_VERSION_TABLE = "alembic_version"


# Foreign keys SQLite databases keep though the models no longer declare them (migration
# 0011 drops them on PostgreSQL only). Autogenerate must not propose dropping them: on
# SQLite that rebuilds ``products``, and the rebuild's delete cascades to the images.
SQLITE_ONLY_KEYS = frozenset(
    {"fk_products_batch_id_batches", "fk_images_batch_id_batches", "fk_images_product_id_products"}
)


def autogenerate_includes(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object | None
) -> bool:
    """Alembic's ``include_object``: everything but the keys above."""
    return not (
        type_ == "foreign_key_constraint"
        and reflected
        and compare_to is None
        and name in SQLITE_ONLY_KEYS
    )


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision Alembic stamped the database with; None when it never migrated it."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(_VERSION_TABLE):
            return None
        version = connection.execute(
            select(column("version_num", String)).select_from(table(_VERSION_TABLE))
        )
        return version.scalar_one_or_none()


def head_revision() -> str:
    return HEAD_REVISION


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


class NotMigrated(PixelbatchError):
    code = "not_migrated"
    status_code = 503


def require_current(engine: Engine) -> None:
    """A shared database is migrated by an operator (``pixelbatch db upgrade``), never
    implicitly by one of many replicas starting at once."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise NotMigrated(
            f"the database is at revision {current or 'none'}, the code needs {head}; "
            "run `pixelbatch db upgrade` first"
        )
