"""batches.images_kept_original and batches.images_grew: how many done images came out no
smaller than their source, counted as they are recorded (the status shows them)

Revision ID: 0008_not_smaller_counts
Revises: 0007_kept_original
Create Date: 2026-11-30 16:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_not_smaller_counts"
down_revision: str | None = "0007_kept_original"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("images_kept_original", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("images_grew", sa.Integer(), nullable=False, server_default="0")
        )
    # Batches recorded before this revision: counted from their images once.
    op.execute(
        """
        UPDATE batches SET
          images_kept_original = (
            SELECT count(*) FROM images
            WHERE images.batch_id = batches.id AND images.status = 'DONE'
              AND images.kept_original
          ),
          images_grew = (
            SELECT count(*) FROM images
            WHERE images.batch_id = batches.id AND images.status = 'DONE'
              AND images.bytes_out > images.bytes_in
          )
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("images_grew")
        batch_op.drop_column("images_kept_original")
