"""output URLs expiry: when the presigned URLs written into a batch's output CSV stop working

Revision ID: 0006_output_urls_expiry
Revises: 0005_batch_priority
Create Date: 2026-11-30 12:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_output_urls_expiry"
down_revision: str | None = "0005_batch_priority"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("output_urls_expire_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("output_urls_expire_at")
