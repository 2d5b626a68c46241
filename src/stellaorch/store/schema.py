"""The store's tables (SQLAlchemy Core); every table carries the tenant.

Times are integer microseconds since the epoch: exact, cheap to compare, the same on every
dialect. Indexes sit beside their table, each naming the query it serves.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
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
    false,
    true,
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
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("created_us", BigInteger, nullable=False),
    # key id of the trusted key whose DSSE signature was verified at publish (0007)
    Column("signed_by", String(64), nullable=True),
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
    # bytes of step outputs stored so far, held under max_run_output_bytes
    Column("output_bytes", BigInteger, nullable=False, server_default="0"),
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
    # PluginIdentity.as_json() of the code the attempt ran (bundle digest or built-in version)
    Column("plugin_json", Text, nullable=True),
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
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("created_us", BigInteger, nullable=False),
    Column("draining", Boolean, nullable=False, server_default=false()),  # no new runs taken
)

quotas = Table(
    "quotas",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("dag_id", String(128), nullable=False),  # "*": the whole tenant
    Column("max_active", Integer, nullable=True),  # runs running at once
    Column("max_per_hour", Integer, nullable=True),  # runs started per hour (token refill)
    Column("burst", Integer, nullable=True),  # token bucket size (default max_per_hour)
    Column("updated_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "dag_id"),
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

schedules = Table(
    "schedules",
    metadata,
    Column("schedule_id", String(36), primary_key=True),  # UUIDv7
    Column("tenant", String(128), nullable=False),
    Column("dag_id", String(128), nullable=False),
    Column("dag_version", String(64), nullable=True),  # None: the latest enabled version
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("inputs_json", Text, nullable=False),
    Column("overlap", String(16), nullable=False),  # skip | buffer_one | allow
    Column("catchup", String(16), nullable=False),  # all | latest | none
    Column("catchup_window_seconds", Integer, nullable=False),
    Column("jitter_seconds", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # active | paused | deleted (soft)
    Column("paused_reason", String(200), nullable=True),  # why it paused itself (0010)
    Column("next_fire_us", BigInteger, nullable=True),  # next trigger's scheduled time
    Column("next_due_us", BigInteger, nullable=True),  # ... plus its jitter
    Column("last_fire_us", BigInteger, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)
# list a tenant's schedules in id (creation) order
Index("ix_schedules_tenant_id", schedules.c.tenant, schedules.c.schedule_id)
# scheduler: active schedules whose next trigger is due, earliest first
Index("ix_schedules_status_due", schedules.c.status, schedules.c.next_due_us)

# A dead-letter group acknowledged as handled: its failures up to `acked_until_us` are hidden
# from the default view (newer ones show again). One row per (tenant, code).
deadletter_acks = Table(
    "deadletter_acks",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("code", String(128), nullable=False),
    Column("acked_until_us", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    PrimaryKeyConstraint("tenant", "code"),
)

schedule_firings = Table(
    "schedule_firings",
    metadata,
    Column("schedule_id", String(36), nullable=False),
    Column("scheduled_us", BigInteger, nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("outcome", String(24), nullable=False),
    Column("run_id", String(36), nullable=True),
    Column("detail", String(200), nullable=True),  # error code of a rejected trigger
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("schedule_id", "scheduled_us"),  # a trigger is recorded once
)
# overlap check: a schedule's newest started trigger
Index(
    "ix_schedule_firings_outcome",
    schedule_firings.c.schedule_id,
    schedule_firings.c.outcome,
    schedule_firings.c.scheduled_us,
)
# scheduler: buffered triggers and started ones whose run is not recorded yet
Index("ix_schedule_firings_open", schedule_firings.c.outcome, schedule_firings.c.run_id)

leader_leases = Table(
    "leader_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),  # "*": the lease covers every tenant
    Column("holder", String(200), nullable=False),
    Column("expires_us", BigInteger, nullable=False),
)

store_probe = Table(
    "store_probe",
    metadata,
    Column("name", String(64), primary_key=True),  # one row per probe, rewritten in place
    Column("tenant", String(128), nullable=False),  # "*": the probe belongs to no tenant
    Column("written_us", BigInteger, nullable=False),
)

# The worker registry (0011): one row per live worker process, rewritten by its heartbeat,
# deleted when it stops cleanly; rows not seen within the TTL are ignored, then pruned.
workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(200), primary_key=True),  # host:pid:suffix
    Column("tenant", String(128), nullable=False),  # "*": workers are shared infrastructure
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(64), nullable=False),
    Column("tenants_json", Text, nullable=False),  # the tenants filter; []: every tenant
    Column("concurrency", Integer, nullable=False),
    Column("slots_in_use", Integer, nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),  # store time of the last heartbeat
)
# list_live_workers and prune_workers: rows by last heartbeat
Index("ix_workers_last_seen", workers.c.last_seen_us)

# Imported, verified plugin bundles; the archive itself is a file named by its digest (0007).
bundles = Table(
    "bundles",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("digest", String(80), nullable=False),  # sha256:<hex> of the archive
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("root_hash", String(80), nullable=False),
    Column("signed_by", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("manifest_json", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "digest"),
    UniqueConstraint("tenant", "name", "version"),  # find: name@version of a tenant
)

secret_versions = Table(
    "secret_versions",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, ... per (tenant, name)
    # nonce || AES-GCM ciphertext and tag; the plaintext never reaches the store
    Column("ciphertext", LargeBinary, nullable=False),
    Column("kek_id", String(32), nullable=False),  # which key-encryption key sealed it
    Column("created_us", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    # the primary key serves every query: by tenant (list), by tenant + names (resolve)
    PrimaryKeyConstraint("tenant", "name", "version"),
)


# One row per process: what its latest warm refreshed. A process that hears a warm NOTIFY
# writes here, so the process answering POST /admin/warm can report every process's figures.
# Resource usage of each attempt: the `sha256:` blob of its metrics document (`metricsRef`).
step_metrics = Table(
    "step_metrics",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("metrics_ref", String(80), nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "run_id", "step_id", "attempt"),
)

# A tenant's own objective for one SLO (the built-in default applies where there is none).
slo_objectives = Table(
    "slo_objectives",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("slo_id", String(32), nullable=False),
    Column("objective", Float, nullable=False),  # the good fraction, e.g. 0.999
    Column("threshold", Float, nullable=True),  # seconds or a count, where the SLO has one
    Column("updated_us", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    PrimaryKeyConstraint("tenant", "slo_id"),
)

# The highest value an SLO sampler saw in one window (backlog: the tenant's queue depth per
# 5-minute window); rows older than the 28-day budget window are pruned (0019).
slo_windows = Table(
    "slo_windows",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("slo_id", String(32), nullable=False),
    Column("window_us", BigInteger, nullable=False),  # the window's start
    Column("peak", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "slo_id", "window_us"),
)
# the SLO figures of runs: a tenant's runs by when they ended
Index("ix_runs_tenant_ended", runs.c.tenant, runs.c.ended_us)

warm_reports = Table(
    "warm_reports",
    metadata,
    Column("worker_id", String(200), nullable=False),
    Column("tenant", String(128), nullable=False),  # "*": a process serves every tenant
    Column("warmed_json", Text, nullable=False),  # {"secrets": {...}, "bundles": {...}}
    Column("warmed_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("worker_id"),
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),  # run.failed | deadletter.growth | backlog
    Column("url", Text, nullable=False),  # validated http(s), at most 2048 characters
    Column("dag_id", String(128), nullable=True),  # run.failed: only this DAG's runs
    Column("threshold", Integer, nullable=True),
    Column("window_seconds", Integer, nullable=False),
    Column("secret_name", String(128), nullable=True),  # HMAC key in the secret store
    Column("cursor_us", BigInteger, nullable=False),  # run.failed: runs ended after it are new
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    # the primary key serves list (by tenant) and get/delete (tenant + id)
    PrimaryKeyConstraint("tenant", "rule_id"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant", String(128), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("event_key", String(200), nullable=False),  # what fired: a run id, a window
    Column("kind", String(32), nullable=False),
    Column("url", Text, nullable=False),  # the rule's URL when it fired
    Column("secret_name", String(128), nullable=True),
    Column("payload_json", Text, nullable=False),  # the body, signed as sent
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("last_error", String(300), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    UniqueConstraint("tenant", "rule_id", "event_key"),  # one delivery per event and rule
)
# the delivery loop: pending deliveries whose next attempt is due
Index("ix_alert_deliveries_due", alert_deliveries.c.status, alert_deliveries.c.next_attempt_us)
# list: a tenant's deliveries, newest first
Index("ix_alert_deliveries_tenant_id", alert_deliveries.c.tenant, alert_deliveries.c.id)
# alerts: a tenant's runs that failed after a cursor (run.failed, deadletter.growth)
Index("ix_runs_tenant_status_ended", runs.c.tenant, runs.c.status, runs.c.ended_us)

# What an attempt printed while it ran, in order, already redacted: written by the worker every
# flush interval so `run logs --follow` sees it live, and kept whatever the attempt's end
# (cancelled, timed out, lost) when no final log blob was recorded.
attempt_log_chunks = Table(
    "attempt_log_chunks",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False),  # 1, 2, ... per attempt
    Column("content", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    # the primary key serves the only read: one attempt's chunks after a seq, in order
    PrimaryKeyConstraint("tenant", "run_id", "step_id", "attempt", "seq"),
)

# Signed checkpoints of each tenant's ledger heads: append-only, chained per tenant (0014).
ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("seq", Integer, nullable=False),  # 1, 2, ... per tenant
    Column("created_us", BigInteger, nullable=False),
    Column("through_id", BigInteger, nullable=False),  # newest ledger_entries.id covered
    Column("entries", BigInteger, nullable=False),  # the tenant's entries through it
    Column("last_entry_hash", String(80), nullable=False),
    Column("checkpoint_hash", String(80), nullable=False),  # sha256 of the payload
    Column("envelope_json", Text, nullable=False),  # the DSSE envelope (payload inside)
    PrimaryKeyConstraint("tenant", "seq"),
)
# the writer's cursor: the newest checkpoint of all tenants
Index("ix_ledger_checkpoints_through", ledger_checkpoints.c.through_id)
# export: a tenant's checkpoints from a time on
Index(
    "ix_ledger_checkpoints_tenant_created",
    ledger_checkpoints.c.tenant,
    ledger_checkpoints.c.created_us,
)

__all__ = [
    "alert_deliveries",
    "alert_rules",
    "attempt_log_chunks",
    "attempts",
    "audit_log",
    "blobs",
    "bundles",
    "dag_versions",
    "idempotency_keys",
    "leader_leases",
    "ledger_checkpoints",
    "ledger_entries",
    "metadata",
    "queue_items",
    "quotas",
    "runs",
    "schedule_firings",
    "schedules",
    "secret_versions",
    "slo_objectives",
    "slo_windows",
    "step_executions",
    "step_metrics",
    "store_probe",
    "tenant_queues",
    "warm_reports",
    "workers",
]
