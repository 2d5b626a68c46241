"""What each process warmed at its latest `admin warm` (`warm_reports`).

Revision ID: 0015
Revises: 0010 (re-chained when the branches of this session merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `warm_reports` (additive: nothing else changes)."""
    op.create_table(
        "warm_reports",
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("warmed_json", sa.Text(), nullable=False),
        sa.Column("warmed_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_warm_reports"),
    )


def downgrade() -> None:
    """Drop it again (development only)."""
    op.drop_table("warm_reports")
