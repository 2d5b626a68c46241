"""Per-attempt resource metrics (`step_metrics`) and per-tenant SLO objectives.

Revision ID: 0018
Revises: 0015 (re-chained when the branches of this session merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `step_metrics` and `slo_objectives` (additive: nothing else changes)."""
    op.create_table(
        "step_metrics",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("metrics_ref", sa.String(80), nullable=False),
        sa.Column("recorded_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "run_id", "step_id", "attempt", name="pk_step_metrics"),
    )
    op.create_table(
        "slo_objectives",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("slo_id", sa.String(32), nullable=False),
        sa.Column("objective", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "slo_id", name="pk_slo_objectives"),
    )


def downgrade() -> None:
    """Drop them again (development only)."""
    op.drop_table("slo_objectives")
    op.drop_table("step_metrics")
