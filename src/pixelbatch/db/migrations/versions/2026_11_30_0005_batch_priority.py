"""batch priority, and the highest priority an API key may ask for

Revision ID: 0005_batch_priority
Revises: 0004_batch_request_details
Create Date: 2026-11-30 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_batch_priority"
down_revision: str | None = "0004_batch_request_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _priority() -> sa.Enum:
    return sa.Enum("low", "normal", "high", name="priority", native_enum=False, length=32)


def upgrade() -> None:
    # Existing batches were all served alike: they become "normal".
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", _priority(), nullable=False, server_default="normal")
        )
    # NULL: no cap, as every key had before.
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_priority", _priority(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_priority")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("priority")
