"""The store probe: readiness proves the store takes a write by rewriting one row.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the `store_probe` table (additive: old processes never read it)."""
    op.create_table(
        "store_probe",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("written_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_probe"),
    )


def downgrade() -> None:
    """Drop it again (development only)."""
    op.drop_table("store_probe")
