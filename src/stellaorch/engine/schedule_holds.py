"""Schedules that hold themselves: paused, with the reason, when the version they run is
disabled (never falling back to an older one); and all of a tenant's schedules paused at once.

A schedule pinned to a version pauses when that version is disabled (by `dag disable`, or
found disabled when a trigger is due). A schedule following "latest enabled" pauses when the
version it follows is disabled by `dag disable`, instead of silently running an older one;
`dag rollback` is the explicit way to move it to an older version (it follows the rollback).
"""

from __future__ import annotations

from stellaorch.domain.audit import Operator
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.engine.schedules import ACTIVE, PAUSED
from stellaorch.store import Connection, dags
from stellaorch.store import schedules as store
from stellaorch.store.dags import DagVersionRow
from stellaorch.store.schedules import ScheduleRow

MAX_REASON = 200  # the paused_reason column
PAGE = 500


def hold(conn: Connection, row: ScheduleRow, operator: Operator, now_us: int) -> None:
    """Pause one schedule with the operator's reason, audited as schedule.pause (caller's txn)."""
    reason = operator.reason[:MAX_REASON]
    store.update_schedule(
        conn, row.tenant, row.schedule_id, status=PAUSED, paused_reason=reason, updated_us=now_us
    )
    entry = operator.entry(row.tenant, "schedule.pause", f"schedule:{row.schedule_id}")
    record_audit(conn, entry, now_us)


def system(reason: str) -> Operator:
    """The scheduler itself, pausing a schedule for `reason`."""
    return Operator("system", reason)


def disabled_reason(row: ScheduleRow) -> str:
    """Why a due schedule cannot fire: its version, or every version, is disabled."""
    if row.dag_version is not None:
        return f"DAG {row.dag_id} version {row.dag_version} is disabled"
    return f"DAG {row.dag_id} has no enabled version"


def active_schedules(conn: Connection, tenant: str, dag_id: str | None = None) -> list[ScheduleRow]:
    """Every active schedule of the tenant (optionally of one DAG), in id order."""
    found: list[ScheduleRow] = []
    after: str | None = None
    while True:
        page = store.list_schedules(
            conn, tenant, dag_id=dag_id, statuses=(ACTIVE,), after_id=after, limit=PAGE
        )
        found += page
        if len(page) < PAGE:
            return found
        after = page[-1].schedule_id


def hold_for_disable(
    conn: Connection, tenant: str, dag_id: str, version: str, now_us: int
) -> list[str]:
    """Before `version` is disabled: pause the schedules pinned to it and, if it is the latest
    enabled version, those following the latest; the ids paused."""
    latest = dags.latest_enabled(conn, tenant, dag_id)
    was_latest = latest is not None and latest.version == version
    paused: list[str] = []
    for row in active_schedules(conn, tenant, dag_id):
        if row.dag_version == version:
            reason = f"DAG {dag_id} version {version} was disabled"
        elif row.dag_version is None and was_latest:
            reason = (
                f"DAG {dag_id} version {version}, the latest enabled, was disabled; "
                "not falling back to an older version (use dag rollback for that)"
            )
        else:
            continue
        hold(conn, row, system(reason), now_us)
        paused.append(row.schedule_id)
    return paused


async def pause_all(env: EngineEnv, tenant: str, operator: Operator) -> list[str]:
    """Pause every active schedule of the tenant in one transaction; one audit entry each."""

    def work(conn: Connection) -> list[str]:
        now = env.clock.now_us()
        rows = active_schedules(conn, tenant)
        for row in rows:
            hold(conn, row, operator, now)
        return [r.schedule_id for r in rows]

    return await env.db.transact(work)


async def disable(
    env: EngineEnv, tenant: str, dag_id: str, version: str, operator: Operator
) -> tuple[DagVersionRow, list[str]]:
    """Disable a version (audited) and, in the same transaction, pause the schedules that
    would run it or fall back from it; the version and the schedules paused."""
    paused: list[str] = []

    def before(conn: Connection, now_us: int) -> None:
        paused[:] = hold_for_disable(conn, tenant, dag_id, version, now_us)  # a retried txn

    row = await env.catalog.set_enabled(tenant, dag_id, version, False, operator, before)
    return row, paused
