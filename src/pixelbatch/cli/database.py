"""``pixelbatch db``: apply and show schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from pixelbatch.cli.common import console, db_app, settings_of
from pixelbatch.cli.startup import database_reachable
from pixelbatch.db import migrate
from pixelbatch.db.engine import make_engine


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply migrations to the configured database."""
    settings = settings_of(ctx)
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        with database_reachable(settings):
            migrate.upgrade(engine, revision)
        console.print(f"database at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's migration revision and the code's head."""
    settings = settings_of(ctx)
    engine = make_engine(settings.resolved_database_url)
    try:
        with database_reachable(settings):
            current, head = migrate.current_revision(engine), migrate.head_revision()
        console.print(f"current: {current}  head: {head}")
    finally:
        engine.dispose()
