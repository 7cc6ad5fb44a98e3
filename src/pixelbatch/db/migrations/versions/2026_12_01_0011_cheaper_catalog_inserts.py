"""Cheaper catalog inserts: on PostgreSQL, products and images without the foreign keys it
checked row by row; on both databases, only repeats in the index of ``duplicate_of``

Revision ID: 0011_cheaper_catalog_inserts
Revises: 0010_batch_status_output_index
Create Date: 2026-12-01 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_cheaper_catalog_inserts"
down_revision: str | None = "0010_batch_status_output_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (constraint, table, column, referred table): the foreign keys of migration 0001 that every
# row of a new catalog was checked against. migrations/env.py keeps autogenerate from
# proposing to drop SQLite's (see upgrade).
CHECKED_KEYS = (
    ("fk_products_batch_id_batches", "products", "batch_id", "batches"),
    ("fk_images_batch_id_batches", "images", "batch_id", "batches"),
    ("fk_images_product_id_products", "images", "product_id", "products"),
)
_REPEATS_ONLY = sa.text("duplicate_of IS NOT NULL")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Only repeats of a URL have a duplicate_of, and it is only looked up by value: NULLs
    # were one index entry per image for nothing. On PostgreSQL the new index is built
    # first, under another name, while reads go on (writes wait), and the exclusive locks
    # below come last, held for moments; SQLite locks the whole file either way.
    if postgres:
        _repeats_index("ix_images_repeats")
        op.drop_index("ix_images_duplicate_of", table_name="images")
        op.execute("ALTER INDEX ix_images_repeats RENAME TO ix_images_duplicate_of")
    else:
        op.drop_index("ix_images_duplicate_of", table_name="images")
        _repeats_index("ix_images_duplicate_of")
    # PostgreSQL checks a foreign key with a query per row, and locks the row it finds (a
    # write to it and the WAL): for a 100,000-row catalog, 200,000 queries for its batch
    # row and 100,000 that lock a product each, about half of PostgreSQL's time to store
    # it. The rows are written only in their batch's own transaction, products then their
    # images with the ids just read back (db.bulk), and deleted child first
    # (db.batch_removal), so no check or cascade is relied on.
    # SQLite keeps its keys: there a check costs nothing measurable, and dropping one means
    # rebuilding the table, whose delete would cascade to the images.
    if postgres:
        for name, table, _, _ in CHECKED_KEYS:
            op.drop_constraint(name, table, type_="foreignkey")


def downgrade() -> None:
    # Re-adding a key checks every row: it fails on an orphan, which only a bug can make.
    if op.get_bind().dialect.name == "postgresql":
        for name, table, column, referred in CHECKED_KEYS:
            op.create_foreign_key(name, table, referred, [column], ["id"], ondelete="CASCADE")
    op.drop_index("ix_images_duplicate_of", table_name="images")
    op.create_index("ix_images_duplicate_of", "images", ["duplicate_of"])


def _repeats_index(name: str) -> None:
    op.create_index(
        name, "images", ["duplicate_of"], postgresql_where=_REPEATS_ONLY, sqlite_where=_REPEATS_ONLY
    )
