"""batch public url: the base URL a batch was uploaded through

Revision ID: 0005_batch_public_url
Revises: 0004_csv_dialect
Create Date: 2026-11-30 11:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_batch_public_url"
down_revision: str | None = "0004_csv_dialect"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("public_url")
