"""API support: idempotency keys and the audit log of admin actions.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = sa.BigInteger()
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the idempotency-key and audit tables (additive: old processes keep working)."""
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("scope_key", sa.String(300), nullable=False),
        sa.Column("idem_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(80), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "scope_key", "idem_key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_created", "idempotency_keys", ["created_us"])
    op.create_table(
        "audit_log",
        sa.Column("id", AUTO_ID, nullable=False, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(200), nullable=True),
        sa.Column("ts_us", BIG, nullable=False),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_tenant_id", "audit_log", ["tenant", "id"])


def downgrade() -> None:
    """Drop the tables again (development only)."""
    op.drop_table("audit_log")
    op.drop_table("idempotency_keys")
