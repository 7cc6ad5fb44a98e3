"""batch request details: the input CSV's dialect, the base URL it came through, and the
fingerprint that an Idempotency-Key replay must match

Revision ID: 0004_batch_request_details
Revises: 0003
Create Date: 2026-11-30 11:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_batch_request_details"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    # The delimiter and BOM of the input, repeated by the output CSV.
    sa.Column("csv_dialect", sa.JSON(), nullable=True),
    # The base URL the upload was sent to, for the URLs the batch hands out.
    sa.Column("public_url", sa.Text(), nullable=True),
    # SHA-256 of the file, options and webhook, when an Idempotency-Key was sent.
    sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column.name)
