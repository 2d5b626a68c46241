"""Queue controls: a tenant queue can drain; quotas and rate limits per tenant or DAG.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `tenant_queues.draining` and the quotas table (additive: old processes keep working)."""
    op.add_column(
        "tenant_queues",
        sa.Column("draining", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "quotas",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("dag_id", sa.String(128), nullable=False),
        sa.Column("max_active", sa.Integer(), nullable=True),
        sa.Column("max_per_hour", sa.Integer(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "dag_id", name="pk_quotas"),
    )


def downgrade() -> None:
    """Drop them again (development only)."""
    op.drop_table("quotas")
    with op.batch_alter_table("tenant_queues") as batch:
        batch.drop_column("draining")
