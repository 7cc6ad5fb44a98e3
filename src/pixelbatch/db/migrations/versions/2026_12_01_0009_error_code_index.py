"""images (batch_id, status, error_code) in place of (batch_id, status): a status poll
counts a batch's failures by code from the index alone

Revision ID: 0009_error_code_index
Revises: 0008_not_smaller_counts
Create Date: 2026-12-01 06:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_error_code_index"
down_revision: str | None = "0008_not_smaller_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The new index serves every query the old one did (it starts with the same columns),
    # so it replaces it: an image's status change still updates one index, not two.
    op.create_index("ix_images_batch_status_code", "images", ["batch_id", "status", "error_code"])
    op.drop_index("ix_images_batch_status", table_name="images")


def downgrade() -> None:
    op.create_index("ix_images_batch_status", "images", ["batch_id", "status"])
    op.drop_index("ix_images_batch_status_code", table_name="images")
