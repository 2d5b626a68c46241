"""Initial schema: dag versions, runs, steps, attempts, ledger, queue, tenant queues, blobs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG = sa.BigInteger()
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table(
        "dag_versions",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("dag_id", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("seq", BIG, nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(80), nullable=False),
        # true()/false() render 1/0 on SQLite and true/false on PostgreSQL
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "dag_id", "version", name="pk_dag_versions"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("dag_id", sa.String(128), nullable=False),
        sa.Column("dag_version", sa.String(64), nullable=False),
        sa.Column("run_token", sa.String(128), nullable=False),
        sa.Column("inputs_json", sa.Text(), nullable=False),
        sa.Column("inputs_hash", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(160), nullable=False),
        sa.Column("replay_of", sa.String(36), nullable=True),
        sa.Column("created_us", BIG, nullable=False),
        sa.Column("started_us", BIG, nullable=True),
        sa.Column("ended_us", BIG, nullable=True),
        sa.Column("outputs_hash", sa.String(80), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("open_steps", sa.Integer(), nullable=False),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.Column("ledger_head", sa.String(80), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
        sa.UniqueConstraint(
            "tenant", "dag_id", "run_token", name="uq_runs_tenant_dag_id_run_token"
        ),
    )
    op.create_index("ix_runs_tenant_created", "runs", ["tenant", "created_us"])
    op.create_table(
        "step_executions",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("deps_remaining", sa.Integer(), nullable=False),
        sa.Column("started_us", BIG, nullable=True),
        sa.Column("ended_us", BIG, nullable=True),
        sa.Column("inputs_hash", sa.String(80), nullable=True),
        sa.Column("outputs_hash", sa.String(80), nullable=True),
        sa.Column("outputs_json", sa.Text(), nullable=True),
        sa.Column("logs_ref", sa.String(80), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "step_id", name="pk_step_executions"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_step_executions_run_id_runs"),
    )
    op.create_table(
        "attempts",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("lease_id", sa.String(32), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_us", BIG, nullable=False),
        sa.Column("ended_us", BIG, nullable=True),
        sa.Column("inputs_hash", sa.String(80), nullable=True),
        sa.Column("outputs_hash", sa.String(80), nullable=True),
        sa.Column("logs_ref", sa.String(80), nullable=True),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "step_id", "attempt", name="pk_attempts"),
        sa.ForeignKeyConstraint(
            ["run_id", "step_id"],
            ["step_executions.run_id", "step_executions.step_id"],
            name="fk_attempts_run_id_step_executions",
        ),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", AUTO_ID, nullable=False, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("entry_type", sa.String(32), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ts_us", BIG, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("entry_hash", sa.String(80), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.UniqueConstraint("run_id", "seq", name="uq_ledger_entries_run_id_seq"),
    )
    op.create_index("ix_ledger_tenant_id", "ledger_entries", ["tenant", "id"])
    op.create_table(
        "queue_items",
        sa.Column("id", AUTO_ID, nullable=False, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("available_us", BIG, nullable=False),
        sa.Column("enqueued_us", BIG, nullable=False),
        sa.Column("lease_id", sa.String(32), nullable=True),
        sa.Column("lease_expires_us", BIG, nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("concurrency_key", sa.String(260), nullable=True),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queue_items"),
        sa.UniqueConstraint("run_id", "step_id", name="uq_queue_items_run_id_step_id"),
    )
    ready = sa.text("lease_id IS NULL")
    leased = sa.text("lease_id IS NOT NULL")
    keyed = sa.text("concurrency_key IS NOT NULL")
    op.create_index(
        "ix_queue_ready",
        "queue_items",
        ["tenant", "id"],
        sqlite_where=ready,
        postgresql_where=ready,
    )
    op.create_index(
        "ix_queue_leased",
        "queue_items",
        ["lease_expires_us"],
        sqlite_where=leased,
        postgresql_where=leased,
    )
    op.create_index(
        "ix_queue_concurrency",
        "queue_items",
        ["concurrency_key"],
        sqlite_where=keyed,
        postgresql_where=keyed,
    )
    op.create_table(
        "tenant_queues",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_tenant_queues"),
    )
    op.create_table(
        "blobs",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("size", BIG, nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_us", BIG, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "hash", name="pk_blobs"),
    )


def downgrade() -> None:
    """Drop everything (development only; production never downgrades)."""
    for table in (
        "blobs",
        "tenant_queues",
        "queue_items",
        "ledger_entries",
        "attempts",
        "step_executions",
        "runs",
        "dag_versions",
    ):
        op.drop_table(table)
