"""Schema migrations through Alembic, callable from the app, the CLI and tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from pixelbatch.errors import PixelbatchError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


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
