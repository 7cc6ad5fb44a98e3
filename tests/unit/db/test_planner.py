"""Planner statistics after a bulk load: PostgreSQL is analysed, so a fresh large batch's
first image page is read through the indexes, not by hashing and sorting the whole batch."""

from __future__ import annotations

from sqlalchemy import Engine, select, text

from pixelbatch.db.models import Image, Product
from pixelbatch.db.planner import ANALYZE_AFTER_IMAGES, analyze_after_bulk_load
from tests import support
from tests.unit.db.factories import new_batch


def _page_plan(engine: Engine, batch_id: object) -> str:
    """EXPLAIN of the unfiltered first image page (``batch_reads.images_page``'s query)."""
    query = (
        select(Image, Product.row_number, Product.serial, Product.name)
        .select_from(Product)
        .join(Image, Image.product_id == Product.id)
        .where(Product.batch_id == batch_id)
        .order_by(Product.row_number, Image.position)
        .limit(50)
    )
    sql = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        return "\n".join(row[0] for row in connection.execute(text(f"EXPLAIN {sql}")))


def test_a_large_upload_is_analysed_and_its_first_page_read_through_the_indexes(
    migrated_pg_url: str,
) -> None:
    with support.sessions(migrated_pg_url) as sessions:
        engine = sessions.kw["bind"]
        assert isinstance(engine, Engine)
        batch_id = new_batch(sessions, ANALYZE_AFTER_IMAGES)  # by COPY, as an upload is

        thread = analyze_after_bulk_load(engine, ANALYZE_AFTER_IMAGES)
        assert thread is not None
        thread.join(timeout=60)

        with engine.connect() as connection:
            analysed = connection.execute(
                text(
                    "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
                    " AND relname IN ('products', 'images')"
                )
            ).scalars()
            assert sorted(analysed) == ["images", "products"]
        plan = _page_plan(engine, batch_id)
        assert "ix_products_batch_row" in plan and "Hash Join" not in plan, plan


def test_small_loads_and_sqlite_are_left_to_themselves(migrated_sqlite_url: str) -> None:
    with support.sessions(migrated_sqlite_url) as sessions:
        engine = sessions.kw["bind"]
        assert isinstance(engine, Engine)
        assert analyze_after_bulk_load(engine, 10 * ANALYZE_AFTER_IMAGES) is None
