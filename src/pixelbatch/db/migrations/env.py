"""Alembic environment: runs against the connection handed over by ``pixelbatch.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from pixelbatch.db.migrate import autogenerate_includes
from pixelbatch.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=autogenerate_includes,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    from pixelbatch.db.engine import make_engine
    from pixelbatch.settings import Settings

    engine = make_engine(Settings().resolved_database_url)
    with engine.connect() as conn:
        run_migrations(conn)
        conn.commit()
else:
    run_migrations(connection)
