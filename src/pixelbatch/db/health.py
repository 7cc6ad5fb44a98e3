"""Whether the database can serve: reachable, and migrated to the code's schema."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, text

from pixelbatch.db import migrate

DatabaseStatus = Literal["ready", "unmigrated", "unreachable"]


def database_status(engine: Engine) -> DatabaseStatus:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        if not migrate.is_up_to_date(engine):
            return "unmigrated"
    except Exception:
        # Whatever the failure (refused, timed out, bad credentials), the answer is the same.
        return "unreachable"
    return "ready"
