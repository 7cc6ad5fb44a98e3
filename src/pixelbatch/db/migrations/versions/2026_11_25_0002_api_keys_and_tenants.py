"""api keys and tenants

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:57:04.436933
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("webhook_secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_tenant"), ["tenant"], unique=False)

    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tenant", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_batches_idempotency_key"), type_="unique")
        batch_op.create_index("ix_batches_tenant_created", ["tenant", "created_at"], unique=False)
        batch_op.create_index(
            "ix_batches_tenant_idempotency_key", ["tenant", "idempotency_key"], unique=True
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_batches_api_key_id_api_keys"),
            "api_keys",
            ["api_key_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_batches_api_key_id_api_keys"), type_="foreignkey")
        batch_op.drop_index("ix_batches_tenant_idempotency_key")
        batch_op.drop_index("ix_batches_tenant_created")
        batch_op.create_unique_constraint(
            batch_op.f("uq_batches_idempotency_key"), ["idempotency_key"]
        )
        batch_op.drop_column("api_key_id")
        batch_op.drop_column("tenant")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_tenant"))

    op.drop_table("api_keys")
