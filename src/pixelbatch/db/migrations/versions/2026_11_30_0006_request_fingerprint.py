"""batch request fingerprint, so an idempotency key reused for another request is refused

Revision ID: 0006_request_fingerprint
Revises: 0005_batch_public_url
Create Date: 2026-11-30 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_request_fingerprint"
down_revision: str | None = "0005_batch_public_url"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("request_fingerprint")
