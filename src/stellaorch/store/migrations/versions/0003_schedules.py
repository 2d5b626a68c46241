"""Schedules: cron triggers, the record of every trigger, and the scheduler's leader lease.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG = sa.BigInteger()


def upgrade() -> None:
    """Add the schedule, firing and leader-lease tables (additive: old processes keep working)."""
    op.create_table(
        "schedules",
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("dag_id", sa.String(128), nullable=False),
        sa.Column("dag_version", sa.String(64), nullable=True),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("inputs_json", sa.Text(), nullable=False),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("catchup", sa.String(16), nullable=False),
        sa.Column("catchup_window_seconds", sa.Integer(), nullable=False),
        sa.Column("jitter_seconds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_fire_us", BIG, nullable=True),
        sa.Column("next_due_us", BIG, nullable=True),
        sa.Column("last_fire_us", BIG, nullable=True),
        sa.Column("created_us", BIG, nullable=False),
        sa.Column("updated_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_tenant_id", "schedules", ["tenant", "schedule_id"])
    op.create_index("ix_schedules_status_due", "schedules", ["status", "next_due_us"])
    op.create_table(
        "schedule_firings",
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("scheduled_us", BIG, nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.Column("created_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", "scheduled_us", name="pk_schedule_firings"),
    )
    op.create_index(
        "ix_schedule_firings_outcome",
        "schedule_firings",
        ["schedule_id", "outcome", "scheduled_us"],
    )
    op.create_index("ix_schedule_firings_open", "schedule_firings", ["outcome", "run_id"])
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leader_leases"),
    )


def downgrade() -> None:
    """Drop the tables again (development only)."""
    op.drop_table("leader_leases")
    op.drop_table("schedule_firings")
    op.drop_table("schedules")
