"""Live step logs: the chunks an attempt printed while it ran.

Revision ID: 0012
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `attempt_log_chunks` (additive: old processes never read or write it)."""
    op.create_table(
        "attempt_log_chunks",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant", "run_id", "step_id", "attempt", "seq", name="pk_attempt_log_chunks"
        ),
    )


def downgrade() -> None:
    """Drop it again (development only)."""
    op.drop_table("attempt_log_chunks")
