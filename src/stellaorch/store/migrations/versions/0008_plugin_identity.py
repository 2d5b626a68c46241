"""Plugin identity: which code an attempt ran (bundle name, version, digest, or a built-in).

Revision ID: 0008
Revises: 0006 (re-chained after 0007 when the bundle store merges)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `attempts.plugin_json` (additive; attempts from before it read as unknown)."""
    op.add_column("attempts", sa.Column("plugin_json", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop it again (development only)."""
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("plugin_json")
