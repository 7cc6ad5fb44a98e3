"""Keep PostgreSQL's planner statistics in step with the uploads' bulk loads.

A 100,000-row catalog arrives by COPY in one transaction. Until autovacuum analyses the
tables, up to a minute later and longer on a busy server, PostgreSQL plans as if the new
batch held a few hundred rows: the first page of its images, which the web UI reads every
second, took 150-190 ms (a hash join of the whole batch, then a sort) where the index plan
takes 0.3 ms. PostgreSQL's manual asks for ``ANALYZE`` after a bulk load ("Populating a
Database"); this runs it, on a thread of its own so the upload's ``202`` does not wait.
SQLite plans these queries by fixed rules, without statistics, and is left alone.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

# Below this many new images, autovacuum's own threshold (10% of the table) comes soon
# enough and a plan that misjudges the batch's size costs little.
ANALYZE_AFTER_IMAGES = 10_000


def analyze_after_bulk_load(engine: Engine, images: int) -> threading.Thread | None:
    """Start ``ANALYZE`` of the tables an upload of ``images`` images filled, if it is
    PostgreSQL and the load was large; returns the thread (for tests), or None."""
    if engine.dialect.name != "postgresql" or images < ANALYZE_AFTER_IMAGES:
        return None
    thread = threading.Thread(
        target=_analyze, args=(engine,), name="pixelbatch-analyze", daemon=True
    )
    thread.start()
    return thread


def _analyze(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE products, images"))
            connection.commit()
    except SQLAlchemyError:
        log.warning("could not refresh the planner statistics; autovacuum will", exc_info=True)
