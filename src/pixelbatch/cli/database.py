"""``pixelbatch db``: apply and show schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from pixelbatch.cli.common import console, db_app
from pixelbatch.db import migrate
from pixelbatch.db.engine import make_engine
from pixelbatch.settings import Settings


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to the configured database."""
    settings = Settings()
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        migrate.upgrade(engine, revision)
        console.print(f"database at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Show the database's migration revision and the code's head."""
    engine = make_engine(Settings().resolved_database_url)
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
        console.print(f"current: {current}  head: {head}")
    finally:
        engine.dispose()
