"""Secrets: encrypted, versioned values per tenant (`secret_versions`).

Revision ID: 0009
Revises: 0006 (re-chained after 0007 and 0008 when the branches merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `secret_versions` (additive: nothing else changes)."""
    op.create_table(
        "secret_versions",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(32), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name", "version", name="pk_secret_versions"),
    )


def downgrade() -> None:
    """Drop it again (development only)."""
    op.drop_table("secret_versions")
