"""Signed bundles and DAG versions: the `bundles` table and `dag_versions.signed_by`.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `bundles` and the nullable `dag_versions.signed_by` (additive for old processes)."""
    op.create_table(
        "bundles",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("root_hash", sa.String(80), nullable=False),
        sa.Column("signed_by", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "digest", name="pk_bundles"),
        sa.UniqueConstraint("tenant", "name", "version", name="uq_bundles_tenant_name_version"),
    )
    op.add_column("dag_versions", sa.Column("signed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop them again (development only)."""
    with op.batch_alter_table("dag_versions") as batch:
        batch.drop_column("signed_by")
    op.drop_table("bundles")
