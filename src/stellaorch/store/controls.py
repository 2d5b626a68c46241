"""Queue controls and quotas: per-tenant queue figures, pause/drain flags, quota rows and usage."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, bindparam, case, func, select, update

from stellaorch.store.bulk import fetch_all
from stellaorch.store.dialect import claim_lock, insert_ignore
from stellaorch.store.queue import READY_ITEMS, QueueItem, ensure_tenant
from stellaorch.store.schema import queue_items, quotas, runs, tenant_queues
from stellaorch.store.workers import MAX_LIVE_WORKERS, live_workers

ItemRow = tuple[int, str, str, str, int, str | None, int | None]
ALL_DAGS = "*"  # quota row key: the whole tenant


@dataclass(frozen=True)
class QueueFigures:
    """One tenant's queue as an operator sees it."""

    tenant: str
    depth: int
    oldest_enqueued_us: int | None
    in_flight: int
    retrying: int
    paused: bool
    draining: bool
    workers_seen: int


@dataclass(frozen=True)
class QuotaRow:
    """Limits for a tenant (dag_id "*") or one of its DAGs; None: no limit of that kind."""

    tenant: str
    dag_id: str
    max_active: int | None
    max_per_hour: int | None
    burst: int | None
    updated_us: int


@dataclass(frozen=True)
class QuotaUsage:
    """Runs counted against a quota: running now, and started since a window's start."""

    active: int
    recent: int
    oldest_recent_us: int | None


_q = queue_items.c
_unleased = _q.lease_id.is_(None)


def _count_if(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def queue_figures(conn: Connection, tenant: str, now_us: int, worker_ttl_us: int) -> QueueFigures:
    """select_queue_figures: depth, oldest item, leases, retries, flags and live workers.

    Workers are those of the registry that serve the tenant, idle or busy (lease holders
    alone would miss idle workers and still count one that was just killed).
    """
    counts = conn.execute(
        select(
            _count_if(_unleased),
            func.min(case((_unleased, _q.enqueued_us), else_=None)),
            _count_if(_q.lease_id.isnot(None)),
            _count_if(_unleased & (_q.attempt > 1)),
        ).where(_q.tenant == tenant)
    ).one()
    _, live = live_workers(conn, worker_ttl_us, now_us, MAX_LIVE_WORKERS)
    workers = sum(1 for w in live if w.serves(tenant))
    t = tenant_queues.c
    flags = conn.execute(select(t.paused, t.draining).where(t.tenant == tenant)).first()
    paused, draining = (bool(flags[0]), bool(flags[1])) if flags else (False, False)
    depth, oldest, leased, retrying = counts
    return QueueFigures(
        tenant, int(depth), oldest, int(leased), int(retrying), paused, draining, workers
    )


def set_queue_flags(conn: Connection, tenant: str, now_us: int, **flags: bool) -> None:
    """update_queue_flags: set `paused` and/or `draining` of the tenant's queue."""
    ensure_tenant(conn, tenant, now_us)
    conn.execute(update(tenant_queues).where(tenant_queues.c.tenant == tenant).values(**flags))


def draining_tenants(conn: Connection, tenants: Iterable[str]) -> set[str]:
    """select_draining: which of these tenants take no new runs."""
    wanted = sorted(set(tenants))
    t = tenant_queues.c
    query = select(t.tenant).where(t.tenant.in_(wanted), t.draining.is_(True))
    return {str(name) for (name,) in conn.execute(query)}


def _quota(row: Any) -> QuotaRow:
    return QuotaRow(*row)


_quota_cols = (
    quotas.c.tenant,
    quotas.c.dag_id,
    quotas.c.max_active,
    quotas.c.max_per_hour,
    quotas.c.burst,
    quotas.c.updated_us,
)


_quotas_of = (
    select(*_quota_cols)
    .where(quotas.c.tenant.in_(bindparam("tenants", expanding=True)))
    .order_by(quotas.c.tenant, quotas.c.dag_id)
)


def list_quotas(conn: Connection, tenants: Iterable[str]) -> list[QuotaRow]:
    """select_quotas: the quota rows of these tenants, by tenant then DAG."""
    params = {"tenants": sorted(set(tenants))}
    return [_quota(r) for r in fetch_all(conn, "quotas_of", _quotas_of, params)]


def put_quota(conn: Connection, row: QuotaRow) -> None:
    """upsert_quota: replace the tenant's (or DAG's) limits."""
    values = {
        "tenant": row.tenant,
        "dag_id": row.dag_id,
        "max_active": row.max_active,
        "max_per_hour": row.max_per_hour,
        "burst": row.burst,
        "updated_us": row.updated_us,
    }
    conn.execute(insert_ignore(conn, quotas, ["tenant", "dag_id"]), [values])
    key = (quotas.c.tenant == row.tenant) & (quotas.c.dag_id == row.dag_id)
    conn.execute(update(quotas).where(key).values(**values))


def quota_usage(conn: Connection, quota: QuotaRow, since_us: int) -> QuotaUsage:
    """select_quota_usage: runs running now and runs started since `since_us` (one aggregate)."""
    r = runs.c
    started = r.started_us >= since_us
    query = select(
        _count_if(r.status == "running"),
        _count_if(started),
        func.min(case((started, r.started_us), else_=None)),
    ).where(r.tenant == quota.tenant, (r.status == "running") | started)
    if quota.dag_id != ALL_DAGS:
        query = query.where(r.dag_id == quota.dag_id)
    active, recent, oldest = conn.execute(query).one()
    return QuotaUsage(int(active), int(recent), oldest)


def ready_items_unblocked(
    conn: Connection,
    tenant: str,
    now_us: int,
    limit: int,
    after_id: int,
    blocked_dags: set[str],
) -> list[QueueItem]:
    """select_ready_unblocked: like `ready_items`, skipping items of queued runs over quota."""
    r = runs.c
    held = select(r.run_id).where(r.run_id == _q.run_id, r.status == "queued")
    if ALL_DAGS not in blocked_dags:
        held = held.where(r.dag_id.in_(sorted(blocked_dags)))
    query = claim_lock(conn, READY_ITEMS.where(~held.exists()))
    params = {"tenant": tenant, "now": now_us, "after": after_id, "limit": limit}
    return [QueueItem(*cast(ItemRow, tuple(row))) for row in conn.execute(query, params)]
