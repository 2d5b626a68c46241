"""Run output budget: the bytes of step outputs a run has stored, to cap a run's total.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `runs.output_bytes` (additive; existing runs start their count at zero)."""
    op.add_column(
        "runs",
        sa.Column("output_bytes", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    """Drop it again (development only)."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("output_bytes")
