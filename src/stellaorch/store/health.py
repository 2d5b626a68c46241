"""Queries behind the health endpoint and the queue metrics; only `write_probe` writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, case, func, select, text, update
from sqlalchemy.exc import DBAPIError

from stellaorch.domain.errors import StoreNotWritable
from stellaorch.store.dialect import insert_ignore
from stellaorch.store.leases import ALL_TENANTS
from stellaorch.store.schema import queue_items, runs, store_probe

PROBE_NAME = "readiness"


@dataclass(frozen=True)
class QueueStats:
    """One tenant's queue: waiting items, leased items, and when the oldest waiting one came."""

    tenant: str
    depth: int
    in_flight: int
    oldest_enqueued_us: int | None


def ping(conn: Connection) -> None:
    """Prove the store answers a query (raises through the store's error mapping if not)."""
    conn.execute(text("SELECT 1"))


def write_probe(conn: Connection, now_us: int) -> None:
    """Rewrite the probe row: proves a write reaches the store (StoreNotWritable if not).

    The row is rewritten in place, so the probe never grows the database; a full disk still
    refuses it, as the new row version has to be written (to the WAL on SQLite).
    """
    row = {"name": PROBE_NAME, "tenant": ALL_TENANTS, "written_us": now_us}
    try:
        conn.execute(insert_ignore(conn, store_probe, ["name"]), [row])
        conn.execute(
            update(store_probe).where(store_probe.c.name == PROBE_NAME).values(written_us=now_us)
        )
    except DBAPIError as exc:
        raise StoreNotWritable(f"the store refused a write: {exc.orig}") from exc


_q = queue_items.c
_waiting = _q.lease_id.is_(None)
# per-tenant depth, in-flight count and oldest waiting item in one pass over the queue
_stats = select(
    _q.tenant,
    func.sum(case((_waiting, 1), else_=0)),
    func.sum(case((_waiting, 0), else_=1)),
    func.min(case((_waiting, _q.enqueued_us), else_=None)),
).group_by(_q.tenant)


def _rows(conn: Connection, query: Select[Any]) -> list[QueueStats]:
    return [
        QueueStats(str(r[0]), int(r[1] or 0), int(r[2] or 0), None if r[3] is None else int(r[3]))
        for r in conn.execute(query.order_by(_q.tenant))
    ]


def tenant_queue_stats(conn: Connection, tenant: str) -> QueueStats:
    """The tenant's queue figures (zeros when it has nothing queued)."""
    found = _rows(conn, _stats.where(_q.tenant == tenant))
    return found[0] if found else QueueStats(tenant, 0, 0, None)


def all_queue_stats(conn: Connection) -> list[QueueStats]:
    """Maintenance query across tenants: queue figures of every tenant with queued items."""
    return _rows(conn, _stats)


_runs_by_status = (
    select(runs.c.tenant, runs.c.status, func.count())
    .group_by(runs.c.tenant, runs.c.status)
    .order_by(runs.c.tenant, runs.c.status)
)


def all_runs_by_status(conn: Connection) -> list[tuple[str, str, int]]:
    """Maintenance query across tenants (metrics): (tenant, status, runs) in the store now."""
    return [(str(t), str(s), int(n)) for t, s, n in conn.execute(_runs_by_status)]
