"""image url duplicates

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:04:57.341971
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "duplicate_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.create_index(batch_op.f("ix_images_duplicate_of"), ["duplicate_of"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_images_duplicate_of_images"),
            "images",
            ["duplicate_of"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_images_duplicate_of_images"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_images_duplicate_of"))
        batch_op.drop_column("duplicate_of")
