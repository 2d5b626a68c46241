"""Alerts: notification rules per tenant and the log of their webhook deliveries.

Revision ID: 0013
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add `alert_rules`, `alert_deliveries` and an index of failed runs (additive)."""
    op.create_table(
        "alert_rules",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("dag_id", sa.String(128), nullable=True),
        sa.Column("threshold", sa.Integer(), nullable=True),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("secret_name", sa.String(128), nullable=True),
        sa.Column("cursor_us", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "rule_id", name="pk_alert_rules"),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", AUTO_ID, nullable=False, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("event_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret_name", sa.String(128), nullable=True),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.UniqueConstraint(
            "tenant", "rule_id", "event_key", name="uq_alert_deliveries_tenant_rule_id_event_key"
        ),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["status", "next_attempt_us"])
    op.create_index("ix_alert_deliveries_tenant_id", "alert_deliveries", ["tenant", "id"])
    op.create_index("ix_runs_tenant_status_ended", "runs", ["tenant", "status", "ended_us"])


def downgrade() -> None:
    """Drop them again (development only)."""
    op.drop_index("ix_runs_tenant_status_ended", table_name="runs")
    op.drop_table("alert_deliveries")
    op.drop_table("alert_rules")
