"""The SLO rows: each tenant's own objectives, sampled windows, and run figures by end time."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, delete, func, select, update

from stellaorch.store.dialect import insert_ignore
from stellaorch.store.schema import runs, slo_objectives, slo_windows

_o, _w, _r = slo_objectives.c, slo_windows.c, runs.c
ENDED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class ObjectiveRow:
    """A tenant's own target for one SLO."""

    slo_id: str
    objective: float
    threshold: float | None
    updated_us: int
    actor: str


def objectives(conn: Connection, tenant: str) -> dict[str, ObjectiveRow]:
    """The tenant's own objectives by SLO id (only the ones it set)."""
    query = select(_o.slo_id, _o.objective, _o.threshold, _o.updated_us, _o.actor).where(
        _o.tenant == tenant
    )
    return {
        str(r[0]): ObjectiveRow(str(r[0]), float(r[1]), r[2], int(r[3]), str(r[4]))
        for r in conn.execute(query)
    }


def set_objective(conn: Connection, tenant: str, row: ObjectiveRow) -> None:
    """Insert or replace the tenant's objective for `row.slo_id`."""
    values = {
        "objective": row.objective,
        "threshold": row.threshold,
        "updated_us": row.updated_us,
        "actor": row.actor,
    }
    conn.execute(
        insert_ignore(conn, slo_objectives, ["tenant", "slo_id"]),
        [{"tenant": tenant, "slo_id": row.slo_id, **values}],
    )
    conn.execute(
        update(slo_objectives).where(_o.tenant == tenant, _o.slo_id == row.slo_id).values(**values)
    )


def run_counts(
    conn: Connection, tenant: str, since_us: int, slow_us: int
) -> tuple[int, int, int, int]:
    """Runs of the tenant that ended since `since_us`: (ended, failed, timed, slow).

    `timed` counts the ended runs that started (a run cancelled while queued never ran), and
    `slow` those of them that took longer than `slow_us`.
    """
    started = _r.started_us.is_not(None)
    query = select(
        func.count(),
        func.coalesce(func.sum(case((_r.status == "failed", 1), else_=0)), 0),
        func.coalesce(func.sum(case((started, 1), else_=0)), 0),
        func.coalesce(
            func.sum(case((and_(started, _r.ended_us - _r.started_us > slow_us), 1), else_=0)),
            0,
        ),
    ).where(_r.tenant == tenant, _r.ended_us >= since_us, _r.status.in_(ENDED))
    row = conn.execute(query).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def record_peak(conn: Connection, tenant: str, slo_id: str, window_us: int, value: int) -> None:
    """Keep the highest `value` seen in the window (any number of samplers may write it)."""
    conn.execute(
        insert_ignore(conn, slo_windows, ["tenant", "slo_id", "window_us"]),
        [{"tenant": tenant, "slo_id": slo_id, "window_us": window_us, "peak": value}],
    )
    conn.execute(
        update(slo_windows)
        .where(
            _w.tenant == tenant,
            _w.slo_id == slo_id,
            _w.window_us == window_us,
            _w.peak < value,
        )
        .values(peak=value)
    )


# The sampler marks every window it sampled under this name (no tenant can be called "*"), so
# a tenant's windows without a row count as good ones: only queues with items are written.
SAMPLED = "*"


def window_counts(
    conn: Connection, tenant: str, slo_id: str, since_us: int, limit: float
) -> tuple[int, int]:
    """Sampled windows since `since_us`: (all, those where the tenant's peak reached `limit`)."""
    sampled = select(func.count()).where(
        _w.tenant == SAMPLED, _w.slo_id == slo_id, _w.window_us >= since_us
    )
    bad = select(func.count()).where(
        _w.tenant == tenant, _w.slo_id == slo_id, _w.window_us >= since_us, _w.peak >= limit
    )
    return int(conn.execute(sampled).scalar_one()), int(conn.execute(bad).scalar_one())


def prune_windows(conn: Connection, before_us: int) -> int:
    """Delete sampled windows that started before `before_us`; how many went."""
    return int(conn.execute(delete(slo_windows).where(_w.window_us < before_us)).rowcount)
