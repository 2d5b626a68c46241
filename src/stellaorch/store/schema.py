"""The store's tables (SQLAlchemy Core); every table carries the tenant.

Times are integer microseconds since the epoch: exact, cheap to compare, the same on every
dialect. Indexes sit beside their table, each naming the query it serves.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

dag_versions = Table(
    "dag_versions",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("dag_id", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),  # publication order within (tenant, dag_id)
    Column("spec_json", Text, nullable=False),
    Column("spec_hash", String(80), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=text("1")),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "dag_id", "version"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("dag_id", String(128), nullable=False),
    Column("dag_version", String(64), nullable=False),
    Column("run_token", String(128), nullable=False),
    Column("inputs_json", Text, nullable=False),
    Column("inputs_hash", String(80), nullable=False),
    Column("status", String(16), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("trigger", String(160), nullable=False),
    Column("replay_of", String(36), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("started_us", BigInteger, nullable=True),
    Column("ended_us", BigInteger, nullable=True),
    Column("outputs_hash", String(80), nullable=True),
    Column("error_json", Text, nullable=True),
    Column("open_steps", Integer, nullable=False),  # steps not yet terminal
    Column("ledger_seq", Integer, nullable=False),  # seq of the newest ledger entry
    Column("ledger_head", String(80), nullable=False),  # entryHash of the newest entry
    UniqueConstraint("tenant", "dag_id", "run_token"),  # idempotent create
)
# list runs of a tenant newest first
Index("ix_runs_tenant_created", runs.c.tenant, runs.c.created_us)

step_executions = Table(
    "step_executions",
    metadata,
    Column("run_id", String(36), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("position", Integer, nullable=False),  # index in the deterministic order
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("deps_remaining", Integer, nullable=False),
    Column("started_us", BigInteger, nullable=True),
    Column("ended_us", BigInteger, nullable=True),
    Column("inputs_hash", String(80), nullable=True),
    Column("outputs_hash", String(80), nullable=True),
    Column("outputs_json", Text, nullable=True),
    Column("logs_ref", String(80), nullable=True),
    Column("error_json", Text, nullable=True),
    PrimaryKeyConstraint("run_id", "step_id"),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
)

attempts = Table(
    "attempts",
    metadata,
    Column("run_id", String(36), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("lease_id", String(32), nullable=False),
    Column("worker_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Column("ended_us", BigInteger, nullable=True),
    Column("inputs_hash", String(80), nullable=True),
    Column("outputs_hash", String(80), nullable=True),
    Column("logs_ref", String(80), nullable=True),
    Column("error_json", Text, nullable=True),
    PrimaryKeyConstraint("run_id", "step_id", "attempt"),
    ForeignKeyConstraint(
        ["run_id", "step_id"], ["step_executions.run_id", "step_executions.step_id"]
    ),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),  # global order: stream `seq`
    Column("run_id", String(36), nullable=False),
    Column("seq", Integer, nullable=False),  # position in the run's chain
    Column("tenant", String(128), nullable=False),
    Column("entry_type", String(32), nullable=False),
    Column("step_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("body", Text, nullable=False),  # the canonical JSON the hash covers
    Column("entry_hash", String(80), nullable=False),
    UniqueConstraint("run_id", "seq"),  # one chain position, once
)
# stream resume and tenant-scoped export: a tenant's entries in global order
Index("ix_ledger_tenant_id", ledger_entries.c.tenant, ledger_entries.c.id)

queue_items = Table(
    "queue_items",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),  # FIFO order
    Column("tenant", String(128), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),  # number the next lease's attempt gets
    Column("available_us", BigInteger, nullable=False),  # not before (retry backoff)
    Column("enqueued_us", BigInteger, nullable=False),
    Column("lease_id", String(32), nullable=True),
    Column("lease_expires_us", BigInteger, nullable=True),
    Column("worker_id", String(128), nullable=True),
    Column("concurrency_key", String(260), nullable=True),
    Column("concurrency_limit", Integer, nullable=True),
    UniqueConstraint("run_id", "step_id"),  # a step is queued at most once
)
# claim: oldest ready items of one tenant
Index(
    "ix_queue_ready",
    queue_items.c.tenant,
    queue_items.c.id,
    sqlite_where=queue_items.c.lease_id.is_(None),
    postgresql_where=queue_items.c.lease_id.is_(None),
)
# recover: leases past their expiry
Index(
    "ix_queue_leased",
    queue_items.c.lease_expires_us,
    sqlite_where=queue_items.c.lease_id.isnot(None),
    postgresql_where=queue_items.c.lease_id.isnot(None),
)
# claim: in-flight count per concurrency key
Index(
    "ix_queue_concurrency",
    queue_items.c.concurrency_key,
    sqlite_where=queue_items.c.concurrency_key.isnot(None),
    postgresql_where=queue_items.c.concurrency_key.isnot(None),
)

tenant_queues = Table(
    "tenant_queues",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("0")),
    Column("created_us", BigInteger, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("hash", String(80), nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "hash"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("scope_key", String(300), nullable=False),  # method + path
    Column("idem_key", String(200), nullable=False),
    Column("request_hash", String(80), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "scope_key", "idem_key"),
)
# purge: keys older than the deduplication window
Index("ix_idempotency_created", idempotency_keys.c.created_us)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant", String(128), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300), nullable=False),
    Column("reason", Text, nullable=False),
    Column("ticket", String(200), nullable=True),
    Column("ts_us", BigInteger, nullable=False),
    Column("details_json", Text, nullable=False),
)
# list and export: a tenant's audit entries in order
Index("ix_audit_tenant_id", audit_log.c.tenant, audit_log.c.id)

__all__ = [
    "attempts",
    "audit_log",
    "blobs",
    "dag_versions",
    "idempotency_keys",
    "ledger_entries",
    "metadata",
    "queue_items",
    "runs",
    "step_executions",
    "tenant_queues",
]
