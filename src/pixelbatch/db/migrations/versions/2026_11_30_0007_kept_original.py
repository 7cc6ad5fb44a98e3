"""images.kept_original: the stored output is the source, metadata stripped losslessly

Revision ID: 0007_kept_original
Revises: 0006_output_urls_expiry
Create Date: 2026-11-30 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_kept_original"
down_revision: str | None = "0006_output_urls_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Images recorded before this revision were all re-encoded: false.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kept_original", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("kept_original")
