"""Queries over schedules and their firings (one row per trigger, never two)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, select, tuple_, update

from stellaorch.store.dialect import insert_ignore, lock_rows
from stellaorch.store.schema import runs, schedule_firings, schedules

_s = schedules.c
_f = schedule_firings.c
ACTIVE = "active"
DELETED = "deleted"
_LIVE_RUN = ("queued", "running")


@dataclass(frozen=True)
class ScheduleRow:
    """A stored schedule."""

    schedule_id: str
    tenant: str
    dag_id: str
    dag_version: str | None
    cron: str
    timezone: str
    inputs_json: str
    overlap: str
    catchup: str
    catchup_window_seconds: int
    jitter_seconds: int
    status: str
    next_fire_us: int | None
    next_due_us: int | None
    last_fire_us: int | None
    created_us: int
    updated_us: int
    paused_reason: str | None = None  # why it paused itself (a disabled version)


@dataclass(frozen=True)
class FiringRow:
    """What became of one trigger."""

    schedule_id: str
    scheduled_us: int
    tenant: str
    outcome: str
    run_id: str | None
    detail: str | None
    created_us: int


_SCHEDULE_FIELDS = [f.name for f in fields(ScheduleRow)]
_FIRING_FIELDS = [f.name for f in fields(FiringRow)]


def _schedule(row: Row[Any]) -> ScheduleRow:
    return ScheduleRow(**{k: row._mapping[k] for k in _SCHEDULE_FIELDS})


def _firing(row: Row[Any]) -> FiringRow:
    return FiringRow(**{k: row._mapping[k] for k in _FIRING_FIELDS})


# -- schedules ----------------------------------------------------------------------------
def insert_schedule(conn: Connection, row: ScheduleRow) -> None:
    """Store a new schedule."""
    conn.execute(schedules.insert().values({k: getattr(row, k) for k in _SCHEDULE_FIELDS}))


def get_schedule(
    conn: Connection, tenant: str, schedule_id: str, *, lock: bool = False
) -> ScheduleRow | None:
    """One schedule of the tenant, whatever its status (row-locked for a change if `lock`)."""
    query = select(schedules).where(_s.tenant == tenant, _s.schedule_id == schedule_id)
    row = conn.execute(lock_rows(conn, query) if lock else query).first()
    return _schedule(row) if row else None


def count_live(conn: Connection, tenant: str) -> int:
    """How many schedules the tenant has that are not deleted."""
    query = select(func.count()).where(_s.tenant == tenant, _s.status != DELETED)
    return int(conn.execute(query).scalar_one())


def list_schedules(
    conn: Connection,
    tenant: str,
    *,
    dag_id: str | None,
    statuses: tuple[str, ...],
    after_id: str | None,
    limit: int,
) -> list[ScheduleRow]:
    """The tenant's schedules in id (creation) order, after `after_id`."""
    query = select(schedules).where(_s.tenant == tenant, _s.status.in_(statuses))
    if dag_id is not None:
        query = query.where(_s.dag_id == dag_id)
    if after_id is not None:
        query = query.where(_s.schedule_id > after_id)
    query = query.order_by(_s.schedule_id).limit(limit)
    return [_schedule(r) for r in conn.execute(query)]


def update_schedule(conn: Connection, tenant: str, schedule_id: str, **values: Any) -> None:
    """Change columns of one schedule."""
    stmt = (
        update(schedules).where(_s.tenant == tenant, _s.schedule_id == schedule_id).values(**values)
    )
    conn.execute(stmt)


_advance = (
    update(schedules)
    .where(_s.schedule_id == bindparam("b_id"))
    .values(
        next_fire_us=bindparam("b_next_fire"),
        next_due_us=bindparam("b_next_due"),
        last_fire_us=bindparam("b_last_fire"),
    )
)


def advance_schedules(conn: Connection, moves: list[dict[str, Any]]) -> None:
    """Move schedules to their next trigger: rows of b_id, b_next_fire, b_next_due, b_last_fire."""
    if moves:
        conn.execute(_advance, moves)


def due_schedules(conn: Connection, now_us: int, limit: int) -> list[ScheduleRow]:
    """Maintenance query across tenants: active schedules due by `now_us`, earliest first."""
    query = (
        select(schedules)
        .where(_s.status == ACTIVE, _s.next_due_us <= now_us)
        .order_by(_s.next_due_us)
        .limit(limit)
    )
    return [_schedule(r) for r in conn.execute(lock_rows(conn, query))]


def earliest_due_us(conn: Connection) -> int | None:
    """Maintenance query across tenants: when the next active schedule falls due."""
    query = select(func.min(_s.next_due_us)).where(_s.status == ACTIVE)
    value = conn.execute(query).scalar()
    return None if value is None else int(value)


# -- firings ------------------------------------------------------------------------------
def record_firing(conn: Connection, row: FiringRow) -> bool:
    """Record a trigger; False when it was recorded before (by this or another scheduler)."""
    stmt = insert_ignore(conn, schedule_firings, ["schedule_id", "scheduled_us"])
    # RETURNING, not rowcount: psycopg reports no rowcount for these inserts.
    inserted = conn.execute(
        stmt.returning(_f.scheduled_us), {k: getattr(row, k) for k in _FIRING_FIELDS}
    )
    return inserted.first() is not None


def set_firing(
    conn: Connection,
    schedule_id: str,
    scheduled_us: int,
    *,
    outcome: str,
    run_id: str | None = None,
    detail: str | None = None,
    expect: str | None = None,
) -> bool:
    """Set a trigger's outcome (only if it is still `expect`, when given); True if changed."""
    stmt = update(schedule_firings).where(
        _f.schedule_id == schedule_id, _f.scheduled_us == scheduled_us
    )
    if expect is not None:
        stmt = stmt.where(_f.outcome == expect)
    result = conn.execute(stmt.values(outcome=outcome, run_id=run_id, detail=detail))
    return bool(result.rowcount > 0)


def run_in_flight(conn: Connection, schedule_id: str) -> bool:
    """True while the schedule's newest started trigger has no run yet, or a live one."""
    newest = (
        select(_f.run_id, runs.c.status)
        .select_from(schedule_firings.outerjoin(runs, runs.c.run_id == _f.run_id))
        .where(_f.schedule_id == schedule_id, _f.outcome == "started")
        .order_by(_f.scheduled_us.desc())
        .limit(1)
    )
    row = conn.execute(newest).first()
    if row is None:
        return False
    return row[0] is None or row[1] in _LIVE_RUN


def has_buffered(conn: Connection, schedule_id: str) -> bool:
    """True when a trigger of the schedule waits for the running one to end."""
    query = select(_f.scheduled_us).where(_f.schedule_id == schedule_id, _f.outcome == "buffered")
    return conn.execute(query.limit(1)).first() is not None


def open_firings(conn: Connection, limit: int) -> list[FiringRow]:
    """Maintenance query across tenants: buffered triggers and started ones without a run."""
    query = (
        select(schedule_firings)
        .where(_f.outcome.in_(("buffered", "started")), _f.run_id.is_(None))
        .order_by(_f.scheduled_us)
        .limit(limit)
    )
    return [_firing(r) for r in conn.execute(query)]


def clear_buffered(conn: Connection, tenant: str, schedule_id: str) -> int:
    """Mark the schedule's waiting triggers cleared; returns how many there were."""
    stmt = (
        update(schedule_firings)
        .where(_f.tenant == tenant, _f.schedule_id == schedule_id, _f.outcome == "buffered")
        .values(outcome="cleared")
    )
    return int(conn.execute(stmt).rowcount)


def recent_firings(conn: Connection, tenant: str, schedule_id: str, limit: int) -> list[FiringRow]:
    """The schedule's newest triggers, newest first."""
    query = (
        select(schedule_firings)
        .where(_f.tenant == tenant, _f.schedule_id == schedule_id)
        .order_by(_f.scheduled_us.desc())
        .limit(limit)
    )
    return [_firing(r) for r in conn.execute(query)]


def prune_firings(conn: Connection, before_us: int, limit: int) -> int:
    """Delete up to `limit` settled triggers scheduled before `before_us`; returns how many.

    Kept whatever their age: triggers still open (buffered, or started without a run yet)
    and each schedule's newest started trigger, which the overlap check reads.
    """
    newer = schedule_firings.alias("newer")
    has_newer_start = (
        select(newer.c.scheduled_us)
        .where(
            newer.c.schedule_id == _f.schedule_id,
            newer.c.outcome == "started",
            newer.c.scheduled_us > _f.scheduled_us,
        )
        .exists()
    )
    settled = (_f.outcome != "buffered") & ((_f.outcome != "started") | _f.run_id.isnot(None))
    kept_start = (_f.outcome == "started") & ~has_newer_start
    victims = (
        select(_f.schedule_id, _f.scheduled_us)
        .where(_f.scheduled_us < before_us, settled, ~kept_start)
        .limit(limit)
    )
    stmt = delete(schedule_firings).where(tuple_(_f.schedule_id, _f.scheduled_us).in_(victims))
    return int(conn.execute(stmt).rowcount)
