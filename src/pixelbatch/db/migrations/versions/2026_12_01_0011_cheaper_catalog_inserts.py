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
# row of a new catalog was checked against.
_CHECKED_KEYS = (
    ("fk_products_batch_id_batches", "products", "batch_id", "batches"),
    ("fk_images_batch_id_batches", "images", "batch_id", "batches"),
    ("fk_images_product_id_products", "images", "product_id", "products"),
)
_REPEATS_ONLY = sa.text("duplicate_of IS NOT NULL")


def upgrade() -> None:
    # PostgreSQL checks a foreign key row by row, locking the referenced row: for a
    # 100,000-row catalog, the batch row 200,000 times and each product once, and a lock is
    # a write to that row and the WAL. The three checks took about half of PostgreSQL's
    # time to store such a catalog. The rows are written only in their batch's own
    # transaction, products then their images with the ids just read back (db.bulk), and
    # deleted child first (db.batch_removal), so no check or cascade is relied on.
    # SQLite keeps its keys: there a check costs nothing measurable, and dropping one means
    # rebuilding the table, whose delete would cascade to the images.
    if op.get_bind().dialect.name == "postgresql":
        for name, table, _, _ in _CHECKED_KEYS:
            op.drop_constraint(name, table, type_="foreignkey")
    # Only repeats of a URL have a duplicate_of, and it is only looked up by value: NULLs
    # were one index entry per image for nothing.
    op.drop_index("ix_images_duplicate_of", table_name="images")
    op.create_index(
        "ix_images_duplicate_of",
        "images",
        ["duplicate_of"],
        postgresql_where=_REPEATS_ONLY,
        sqlite_where=_REPEATS_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_images_duplicate_of", table_name="images")
    op.create_index("ix_images_duplicate_of", "images", ["duplicate_of"])
    if op.get_bind().dialect.name == "postgresql":
        for name, table, column, referred in _CHECKED_KEYS:
            op.create_foreign_key(name, table, referred, [column], ["id"], ondelete="CASCADE")
