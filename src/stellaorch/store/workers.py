"""The worker registry's queries: heartbeat a row, remove it, list the live ones, prune the rest.

Every time is the store's (`store_now_us`), taken inside the same transaction as the
statement that uses it, so the TTL means the same on every host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from stellaorch.store.dialect import claim_lock, store_now_us
from stellaorch.store.leases import ALL_TENANTS
from stellaorch.store.schema import workers

_w = workers.c
# A registry read answers at most this many rows: a registry gone wild cannot flood a reply.
MAX_LIVE_WORKERS = 1000


@dataclass(frozen=True)
class WorkerRow:
    """One worker process as it last reported itself."""

    worker_id: str
    host: str
    pid: int
    version: str
    tenants: tuple[str, ...]  # the tenants filter; empty: every tenant
    concurrency: int
    slots_in_use: int
    started_us: int
    last_seen_us: int

    def serves(self, tenant: str) -> bool:
        """True when this worker leases `tenant`'s steps."""
        return not self.tenants or tenant in self.tenants


def beat_worker(conn: Connection, row: WorkerRow, local_now_us: int) -> int:
    """upsert_worker: record a heartbeat (the first one registers the row); the store time."""
    now = store_now_us(conn, local_now_us)
    values = {
        "host": row.host,
        "pid": row.pid,
        "version": row.version,
        "tenants_json": json.dumps(list(row.tenants)),
        "concurrency": row.concurrency,
        "slots_in_use": row.slots_in_use,
        "last_seen_us": now,
    }
    # Only the worker itself writes its row, so update-else-insert cannot race with itself.
    changed = conn.execute(update(workers).where(_w.worker_id == row.worker_id).values(**values))
    if changed.rowcount == 0:
        conn.execute(
            insert(workers).values(
                worker_id=row.worker_id, tenant=ALL_TENANTS, started_us=now, **values
            )
        )
    return now


def remove_worker(conn: Connection, worker_id: str) -> None:
    """delete_worker: a worker that stops cleanly leaves the registry at once."""
    conn.execute(delete(workers).where(_w.worker_id == worker_id))


def prune_workers(conn: Connection, ttl_us: int, local_now_us: int) -> int:
    """delete_stale_workers: rows not seen within the TTL (killed processes); how many.

    Rows another transaction holds are skipped (PostgreSQL's SKIP LOCKED): two workers
    pruning at once, or a late heartbeat of a stalled one, never wait on each other.
    """
    cutoff = store_now_us(conn, local_now_us) - ttl_us
    stale = claim_lock(conn, select(_w.worker_id).where(_w.last_seen_us < cutoff))
    return conn.execute(delete(workers).where(_w.worker_id.in_(stale.scalar_subquery()))).rowcount


def live_workers(
    conn: Connection, ttl_us: int, local_now_us: int, limit: int
) -> tuple[int, list[WorkerRow]]:
    """select_live_workers: the store time and up to `limit` rows seen within the TTL, by id."""
    now = store_now_us(conn, local_now_us)
    rows = conn.execute(
        select(
            _w.worker_id,
            _w.host,
            _w.pid,
            _w.version,
            _w.tenants_json,
            _w.concurrency,
            _w.slots_in_use,
            _w.started_us,
            _w.last_seen_us,
        )
        .where(_w.last_seen_us >= now - ttl_us)
        .order_by(_w.worker_id)
        .limit(limit)
    ).all()
    return now, [_row(r) for r in rows]


def _row(r: Any) -> WorkerRow:
    worker_id, host, pid, version, tenants, concurrency, slots, started, seen = r
    filter_ = json.loads(str(tenants))
    return WorkerRow(
        str(worker_id),
        str(host),
        int(pid),
        str(version),
        tuple(str(t) for t in filter_) if isinstance(filter_, list) else (),
        int(concurrency),
        int(slots),
        int(started),
        int(seen),
    )
