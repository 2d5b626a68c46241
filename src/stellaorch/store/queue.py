"""The ready queue: per-tenant FIFO of queued steps, leases, heartbeats and expiry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, bindparam, delete, func, null, or_, select, update

from stellaorch.store.bulk import execute_many, execute_once, fetch_all, insert_rows
from stellaorch.store.dialect import (
    claim_lock,
    insert_ignore,
    lock_rows,
    per_dialect,
    try_lock_names,
)
from stellaorch.store.runs import chunks
from stellaorch.store.schema import queue_items, tenant_queues

LeaseRow = tuple[int, str, str, str, str, int]  # id, lease_id, tenant, run_id, step_id, attempt


@dataclass(frozen=True)
class QueueItem:
    """A queued step as the claim sees it."""

    id: int
    tenant: str
    run_id: str
    step_id: str
    attempt: int
    concurrency_key: str | None
    concurrency_limit: int | None


def ensure_tenant(conn: Connection, tenant: str, now_us: int) -> None:
    """Make sure the tenant has a queue row (the claim walks these)."""
    stmt = insert_ignore(conn, tenant_queues, ["tenant"])
    conn.execute(stmt, [{"tenant": tenant, "paused": False, "created_us": now_us}])


def enqueue(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Append items to their tenants' queues."""
    insert_rows(conn, queue_items, rows)


_claimable = (
    select(tenant_queues.c.tenant)
    .where(tenant_queues.c.paused.is_(False))
    .order_by(tenant_queues.c.tenant)
)

_claimable_of = _claimable.where(tenant_queues.c.tenant.in_(bindparam("only", expanding=True)))


def claimable_tenants(conn: Connection, only: Sequence[str] = ()) -> list[str]:
    """Maintenance query across tenants: every tenant (of `only`, if given) not paused."""
    if only:
        rows = fetch_all(conn, "claimable_of", _claimable_of, {"only": list(only)})
    else:
        rows = fetch_all(conn, "claimable", _claimable, {})
    return [t for (t,) in rows]


_q = queue_items.c
_held = queue_items.alias("held")
# An item may be claimed unless its step already runs `concurrency_limit` attempts at once
# (per-key count served by ix_queue_concurrency).
_has_room = or_(
    _q.concurrency_key.is_(None),
    select(func.count())
    .where(_held.c.concurrency_key == _q.concurrency_key, _held.c.lease_id.isnot(None))
    .scalar_subquery()
    < _q.concurrency_limit,
)
# claim: the tenant's oldest due unleased items (served by ix_queue_ready); controls.py narrows it
READY_ITEMS = (
    select(
        _q.id,
        _q.tenant,
        _q.run_id,
        _q.step_id,
        _q.attempt,
        _q.concurrency_key,
        _q.concurrency_limit,
    )
    .where(
        _q.tenant == bindparam("tenant"),
        _q.lease_id.is_(None),
        _q.available_us <= bindparam("now"),
        _q.id > bindparam("after"),
        _has_room,
    )
    .order_by(_q.id)
    .limit(bindparam("limit"))
)
_ready_by_dialect = per_dialect(READY_ITEMS, claim_lock)


def ready_items(
    conn: Connection, tenant: str, now_us: int, limit: int, after_id: int = 0
) -> list[QueueItem]:
    """The tenant's oldest unleased items that are due, FIFO, after queue position `after_id`."""
    params = {"tenant": tenant, "now": now_us, "after": after_id, "limit": limit}
    rows = fetch_all(conn, "ready_items", _ready_by_dialect, params)
    return [
        QueueItem(*cast(tuple[int, str, str, str, int, str | None, int | None], r)) for r in rows
    ]


def reserve_concurrency(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """Concurrency keys this transaction may lease under, with their leased-item counts.

    On PostgreSQL each key is locked until commit so two concurrent claims cannot both count
    the same free place; a key another claim is counting right now is left out (no waiting).
    """
    return inflight_counts(conn, try_lock_names(conn, "concurrency", keys))


def inflight_counts(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """Leased items per concurrency key (every key asked for; 0 when none is leased)."""
    wanted = sorted(set(keys))
    q = queue_items.c
    query = (
        select(q.concurrency_key, func.count())
        .where(q.concurrency_key.in_(wanted), q.lease_id.isnot(None))
        .group_by(q.concurrency_key)
    )
    counts = dict.fromkeys(wanted, 0)
    counts.update({str(k): int(n) for k, n in conn.execute(query)})
    return counts


_grant = (
    update(queue_items)
    .where(queue_items.c.id == bindparam("b_id"))
    .values(
        lease_id=bindparam("b_lease_id"),
        lease_expires_us=bindparam("b_expires"),
        worker_id=bindparam("b_worker"),
    )
)


def grant_leases(conn: Connection, params: list[dict[str, Any]]) -> None:
    """Give each claimed item its lease (b_id, b_lease_id, b_expires, b_worker)."""
    execute_many(conn, "grant", _grant, params)


_lease_of = select(queue_items.c.id, queue_items.c.lease_id, queue_items.c.lease_expires_us).where(
    queue_items.c.id.in_(bindparam("ids", expanding=True))
)
# locked in id order, after the runs they belong to (the lock order of every unit of work)
_locked_leases = per_dialect(_lease_of.order_by(queue_items.c.id), lock_rows)


def _id_chunks(ids: Iterable[int], size: int = 500) -> Iterable[list[int]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _lease_rows(conn: Connection, ids: list[int]) -> list[tuple[int, str | None, int | None]]:
    """(id, lease_id, lease_expires_us) of existing items, locked in id order."""
    rows = fetch_all(conn, "locked_leases", _locked_leases, {"ids": ids})
    return [cast(tuple[int, str | None, int | None], tuple(r)) for r in rows]


def current_leases(conn: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """The lease now held on each item that still exists (items locked on PostgreSQL)."""
    out: dict[int, str | None] = {}
    for part in _id_chunks(ids):
        for item_id, lease, _ in _lease_rows(conn, part):
            out[item_id] = lease
    return out


def lock_leases(
    conn: Connection, found: Sequence[LeaseRow], expired_before: int | None = None
) -> list[LeaseRow]:
    """Lock the items of leases found earlier; keep those still under the same lease.

    With `expired_before`, also drop leases a heartbeat extended past it meanwhile.
    """
    valid: set[int] = set()
    wanted = {row[0]: row[1] for row in found}
    for part in _id_chunks(wanted):
        for item_id, lease, expires in _lease_rows(conn, part):
            fresh = expired_before is None or (expires is not None and expires < expired_before)
            if lease is not None and lease == wanted[item_id] and fresh:
                valid.add(int(item_id))
    return [row for row in found if row[0] in valid]


_delete_items = delete(queue_items).where(queue_items.c.id.in_(bindparam("ids", expanding=True)))


def delete_items(conn: Connection, ids: Sequence[int]) -> None:
    """Remove finished items from the queue."""
    for start in range(0, len(ids), 500):
        execute_once(conn, "delete_items", _delete_items, {"ids": list(ids[start : start + 500])})


_requeue = (
    update(queue_items)
    .where(queue_items.c.id == bindparam("b_id"))
    .values(
        attempt=bindparam("b_attempt"),
        available_us=bindparam("b_available"),
        lease_id=null(),
        lease_expires_us=null(),
        worker_id=null(),
    )
)


def requeue(conn: Connection, params: list[dict[str, Any]]) -> None:
    """Put items back for another attempt (b_id, b_attempt, b_available); keeps FIFO place."""
    execute_many(conn, "requeue", _requeue, params)


def expired_leases(
    conn: Connection, now_us: int, limit: int
) -> list[tuple[int, str, str, str, str, int]]:
    """Maintenance query across tenants: (id, lease_id, tenant, run_id, step_id, attempt).

    Not locked: the caller locks the runs first, then the items (`lock_leases`).
    """
    q = queue_items.c
    query = (
        select(q.id, q.lease_id, q.tenant, q.run_id, q.step_id, q.attempt)
        .where(q.lease_id.isnot(None), q.lease_expires_us < now_us)
        .order_by(q.lease_expires_us)
        .limit(limit)
    )
    return [cast(LeaseRow, tuple(r)) for r in conn.execute(query)]


def leases_by_id(conn: Connection, lease_ids: Sequence[str]) -> list[LeaseRow]:
    """(id, lease_id, tenant, run_id, step_id, attempt) of the items holding these leases."""
    q = queue_items.c
    out: list[LeaseRow] = []
    for part in chunks(list(lease_ids)):
        query = select(q.id, q.lease_id, q.tenant, q.run_id, q.step_id, q.attempt).where(
            q.lease_id.in_(part)
        )
        out.extend(cast(LeaseRow, tuple(r)) for r in conn.execute(query))
    return out


_extend = update(queue_items).values(lease_expires_us=bindparam("expires"))


def extend_leases(conn: Connection, lease_ids: Sequence[str], expires_us: int) -> set[str]:
    """Heartbeat: push expiry of the given leases; returns the ones that are still current.

    Items another transaction holds right now are not waited for (that transaction is
    completing, recovering or cancelling them); they count as current if still leased.
    """
    alive: set[str] = set()
    for part in chunks(sorted(lease_ids)):
        free = claim_lock(conn, select(queue_items.c.id).where(queue_items.c.lease_id.in_(part)))
        conn.execute(
            _extend.where(queue_items.c.id.in_(free.scalar_subquery())), {"expires": expires_us}
        )
        query = select(queue_items.c.lease_id).where(queue_items.c.lease_id.in_(part))
        alive.update(str(lease) for (lease,) in conn.execute(query))
    return alive


def leased_steps(conn: Connection, run_id: str) -> set[str]:
    """The steps of a run whose queue item is leased to a worker right now."""
    q = queue_items.c
    query = select(q.step_id).where(q.run_id == run_id, q.lease_id.isnot(None))
    return {step_id for (step_id,) in conn.execute(query)}


def waiting_retries(conn: Connection, tenant: str, run_id: str) -> dict[str, int]:
    """Steps of a run waiting for a retry (unleased items past attempt 1): when each is due."""
    q = queue_items.c
    query = select(q.step_id, q.available_us).where(
        q.tenant == tenant, q.run_id == run_id, q.lease_id.is_(None), q.attempt > 1
    )
    return {str(step_id): int(due) for step_id, due in conn.execute(query)}


def drop_runs(conn: Connection, run_ids: Sequence[str]) -> None:
    """Remove every queue item of some runs (they ended)."""
    for part in chunks(run_ids):
        conn.execute(delete(queue_items).where(queue_items.c.run_id.in_(list(part))))


_next_due = select(func.min(_q.available_us)).where(_q.lease_id.is_(None), _has_room)
_next_due_of = _next_due.where(_q.tenant.in_(bindparam("only", expanding=True)))


def next_due_us(conn: Connection, only: Sequence[str] = ()) -> int | None:
    """Maintenance query: the earliest time an unleased item becomes due, across tenants."""
    # Asked after every claim that found nothing: compiled once, like the claim's own queries.
    if only:
        rows = fetch_all(conn, "next_due_of", _next_due_of, {"only": list(only)})
    else:
        rows = fetch_all(conn, "next_due", _next_due, {})
    due = rows[0][0] if rows else None
    return None if due is None else int(due)
