"""Ledger checkpoints: signed, chained statements of every tenant's ledger heads.

Revision ID: 0014
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the append-only `ledger_checkpoints` table (old processes never read it)."""
    op.create_table(
        "ledger_checkpoints",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("through_id", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("last_entry_hash", sa.String(80), nullable=False),
        sa.Column("checkpoint_hash", sa.String(80), nullable=False),
        sa.Column("envelope_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "seq", name="pk_ledger_checkpoints"),
    )
    op.create_index("ix_ledger_checkpoints_through", "ledger_checkpoints", ["through_id"])
    op.create_index(
        "ix_ledger_checkpoints_tenant_created", "ledger_checkpoints", ["tenant", "created_us"]
    )


def downgrade() -> None:
    """Drop it again (development only)."""
    op.drop_index("ix_ledger_checkpoints_tenant_created", "ledger_checkpoints")
    op.drop_index("ix_ledger_checkpoints_through", "ledger_checkpoints")
    op.drop_table("ledger_checkpoints")
