"""SLO sample windows (`slo_windows`) and the runs-by-end index the SLO figures read.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `slo_windows` and `ix_runs_tenant_ended` (additive)."""
    op.create_table(
        "slo_windows",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("slo_id", sa.String(32), nullable=False),
        sa.Column("window_us", sa.BigInteger(), nullable=False),
        sa.Column("peak", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "slo_id", "window_us", name="pk_slo_windows"),
    )
    op.create_index("ix_runs_tenant_ended", "runs", ["tenant", "ended_us"])


def downgrade() -> None:
    """Drop them again (development only)."""
    op.drop_index("ix_runs_tenant_ended", table_name="runs")
    op.drop_table("slo_windows")
