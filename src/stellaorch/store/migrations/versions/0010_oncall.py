"""On-call operations: dead-letter acknowledgements and why a schedule paused itself.

Revision ID: 0010
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `deadletter_acks` and `schedules.paused_reason` (additive, old processes unaffected)."""
    op.create_table(
        "deadletter_acks",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("acked_until_us", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "code", name="pk_deadletter_acks"),
    )
    op.add_column("schedules", sa.Column("paused_reason", sa.String(200), nullable=True))


def downgrade() -> None:
    """Drop them again (development only)."""
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("paused_reason")
    op.drop_table("deadletter_acks")
