"""The schedule service: create, read, pause, resume, delete and clear cron schedules.

Every change is one transaction with its audit entry; the in-process scheduler is told of it
at once, other processes' schedulers see it on their next poll. Backfills (runs for past fire times,
on an operator's request) are `engine.backfill`; firing due triggers is `engine.scheduler`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stellaorch.domain.audit import AuditEntry
from stellaorch.domain.audit import Operator as Operator
from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.cron import CronTrigger, parse_trigger
from stellaorch.domain.errors import (
    Conflict,
    DagDisabled,
    DagNotFound,
    InputsInvalid,
    NotFound,
    ValidationError,
)
from stellaorch.domain.firing import (
    CATCHUP_LIMIT,
    Catchup,
    Outcome,
    Overlap,
    ScheduleTiming,
    check_bounds,
)
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.store import Connection, dags
from stellaorch.store import schedules as store
from stellaorch.store.schedules import FiringRow as FiringRow
from stellaorch.store.schedules import ScheduleRow as ScheduleRow

ACTIVE, PAUSED, DELETED = "active", "paused", "deleted"
LISTED = (ACTIVE, PAUSED)
Listener = Callable[[], None]
Transition = Callable[[Connection, ScheduleRow, int], None]


class ScheduleTooFrequent(ValidationError):
    """The cron fires more often than the operator's minimum interval allows."""

    code = "SCHEDULE_TOO_FREQUENT"


class ScheduleLimitReached(Conflict):
    """The tenant already has as many schedules as the operator allows."""

    code = "SCHEDULE_LIMIT_REACHED"


class ScheduleNotFound(NotFound):
    """No such schedule for this tenant (or it was deleted)."""

    code = "SCHEDULE_NOT_FOUND"


@dataclass(frozen=True)
class ScheduleSpec:
    """What it takes to create a schedule."""

    tenant: str
    dag_id: str
    cron: str
    timezone: str = "UTC"
    version: str | None = None  # None: the latest enabled version when each trigger fires
    inputs: Mapping[str, Any] = field(default_factory=dict)
    overlap: str = Overlap.SKIP.value
    catchup: str = Catchup.LATEST.value
    catchup_window_seconds: int = 3_600
    jitter_seconds: int = 0


def schedule_audit(
    operator: Operator, tenant: str, action: str, schedule_id: str, **details: Any
) -> AuditEntry:
    """The audit entry of one action on one schedule."""
    return operator.entry(tenant, action, f"schedule:{schedule_id}", details)


@dataclass(frozen=True)
class Cleared:
    """A schedule after its pending triggers were cleared, and how many there were."""

    schedule: ScheduleRow
    cleared: int


def timing_of(row: ScheduleRow) -> ScheduleTiming:
    """The time-related settings of a stored schedule."""
    return ScheduleTiming(
        row.schedule_id,
        CronTrigger(row.cron, row.timezone),  # validated when the schedule was created
        Catchup(row.catchup),
        row.catchup_window_seconds,
        row.jitter_seconds,
    )


def version_enabled(conn: Connection, tenant: str, dag_id: str, version: str | None) -> bool:
    """True when a new run of that version (or of the latest enabled one) may start."""
    if version is None:
        return dags.latest_enabled(conn, tenant, dag_id) is not None
    row = dags.get_version(conn, tenant, dag_id, version)
    return row is not None and row.enabled


def _check_dag(conn: Connection, tenant: str, dag_id: str, version: str | None) -> None:
    """The DAG (version) must exist and take new runs."""
    if version_enabled(conn, tenant, dag_id, version):
        return
    if version is not None and dags.get_version(conn, tenant, dag_id, version) is None:
        raise DagNotFound(f"DAG {dag_id} version {version} not found")
    if version is None and not dags.list_versions(conn, tenant, dag_id):
        raise DagNotFound(f"DAG {dag_id} not found")
    which = f"version {version} is" if version is not None else "has no enabled version; all are"
    raise DagDisabled(f"DAG {dag_id} {which} disabled")


def _choice(kind: type[Overlap] | type[Catchup], value: str, name: str) -> str:
    allowed = [m.value for m in kind]
    if value not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}")
    return value


def _inputs_json(inputs: Any) -> str:
    if not isinstance(inputs, Mapping):
        raise InputsInvalid("schedule inputs must be a JSON object")
    try:
        return canonical_json(inputs)
    except (TypeError, ValueError) as exc:
        raise InputsInvalid(f"schedule inputs are not valid JSON: {exc}") from exc


class ScheduleService:
    """Cron schedules of one tenant at a time; admin changes are audited."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Be told after every committed change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _new_row(self, spec: ScheduleSpec, now: int) -> ScheduleRow:
        """A validated, active schedule row (nothing is written)."""
        trigger = parse_trigger(spec.cron, spec.timezone, now)
        check_bounds(spec.catchup_window_seconds, spec.jitter_seconds)
        minimum = self.env.settings.schedule_min_interval_seconds
        gap = trigger.shortest_gap_seconds(now)
        if gap < minimum:
            raise ScheduleTooFrequent(
                f"cron {spec.cron!r} fires every {gap:g} s at times; the minimum interval is"
                f" {minimum} s (STELLA_ORCH_SCHEDULE_MIN_INTERVAL_SECONDS)"
            )
        schedule_id = self.env.ids.uuid7()
        timing = ScheduleTiming(
            schedule_id,
            trigger,
            Catchup(_choice(Catchup, spec.catchup, "catchup")),
            spec.catchup_window_seconds,
            spec.jitter_seconds,
        )
        next_fire = timing.first_after(now)
        return ScheduleRow(
            schedule_id=schedule_id,
            tenant=spec.tenant,
            dag_id=spec.dag_id,
            dag_version=spec.version,
            cron=trigger.expression,
            timezone=trigger.timezone,
            inputs_json=_inputs_json(spec.inputs),
            overlap=_choice(Overlap, spec.overlap, "overlap"),
            catchup=timing.catchup.value,
            catchup_window_seconds=spec.catchup_window_seconds,
            jitter_seconds=spec.jitter_seconds,
            status=ACTIVE,
            next_fire_us=next_fire,
            next_due_us=timing.due_us(next_fire),
            last_fire_us=None,
            created_us=now,
            updated_us=now,
        )

    async def create(self, spec: ScheduleSpec, operator: Operator) -> ScheduleRow:
        """Validate and store a schedule; nothing is written when anything is wrong."""

        def work(conn: Connection) -> ScheduleRow:
            now = self.env.clock.now_us()
            row = self._new_row(spec, now)
            _check_dag(conn, spec.tenant, spec.dag_id, spec.version)
            cap = self.env.settings.max_schedules_per_tenant
            if store.count_live(conn, spec.tenant) >= cap:
                raise ScheduleLimitReached(
                    f"tenant {spec.tenant} already has {cap} schedules, the most allowed"
                    " (STELLA_ORCH_MAX_SCHEDULES_PER_TENANT); delete one first"
                )
            store.insert_schedule(conn, row)
            entry = schedule_audit(
                operator,
                row.tenant,
                "schedule.create",
                row.schedule_id,
                dagId=row.dag_id,
                version=row.dag_version,
                cron=row.cron,
            )
            record_audit(conn, entry, now)
            return row

        row = await self.env.db.transact(work)
        self._changed()
        return row

    async def get(self, tenant: str, schedule_id: str) -> ScheduleRow:
        """One schedule of the tenant (deleted ones are gone)."""
        return await self.env.db.transact(lambda c: _require(c, tenant, schedule_id))

    async def page(
        self,
        tenant: str,
        *,
        dag_id: str | None = None,
        status: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> tuple[list[ScheduleRow], str | None]:
        """A page of schedules in id order, and the id to continue after (or None)."""
        statuses = (status,) if status else LISTED

        def work(conn: Connection) -> list[ScheduleRow]:
            return store.list_schedules(
                conn, tenant, dag_id=dag_id, statuses=statuses, after_id=after, limit=limit + 1
            )

        found = await self.env.db.transact(work)
        page = found[:limit]
        return page, (page[-1].schedule_id if len(found) > limit and page else None)

    async def firings(self, tenant: str, schedule_id: str, limit: int = 20) -> list[FiringRow]:
        """The schedule's newest triggers and what became of them, newest first."""

        def work(conn: Connection) -> list[FiringRow]:
            _require(conn, tenant, schedule_id)
            return store.recent_firings(conn, tenant, schedule_id, limit)

        return await self.env.db.transact(work)

    async def pause(self, tenant: str, schedule_id: str, operator: Operator) -> ScheduleRow:
        """Stop firing until resumed (triggers while paused are not caught up)."""
        return await self._change(tenant, schedule_id, operator, "schedule.pause", self._pause)

    async def resume(self, tenant: str, schedule_id: str, operator: Operator) -> ScheduleRow:
        """Fire again from the next trigger after now."""
        return await self._change(tenant, schedule_id, operator, "schedule.resume", self._resume)

    async def delete(self, tenant: str, schedule_id: str, operator: Operator) -> ScheduleRow:
        """Soft-delete: the schedule stops for good; its triggers stay on record."""
        return await self._change(tenant, schedule_id, operator, "schedule.delete", self._delete)

    async def clear(self, tenant: str, schedule_id: str, operator: Operator) -> Cleared:
        """Drop pending and catch-up triggers (recorded as cleared); fire from now on."""

        def work(conn: Connection) -> Cleared:
            now = self.env.clock.now_us()
            row = _require(conn, tenant, schedule_id, lock=True)
            count = self._clear_pending(conn, row, now)
            entry = schedule_audit(operator, tenant, "schedule.clear", schedule_id, cleared=count)
            record_audit(conn, entry, now)
            return Cleared(_require(conn, tenant, schedule_id), count)

        cleared = await self.env.db.transact(work)
        self._changed()
        return cleared

    # -- transitions ----------------------------------------------------------------------
    async def _change(
        self, tenant: str, schedule_id: str, operator: Operator, action: str, step: Transition
    ) -> ScheduleRow:
        """Apply one transition and its audit entry in one transaction."""

        def work(conn: Connection) -> ScheduleRow:
            now = self.env.clock.now_us()
            row = _require(conn, tenant, schedule_id, lock=True)
            step(conn, row, now)
            entry = schedule_audit(operator, tenant, action, schedule_id, status=row.status)
            record_audit(conn, entry, now)
            return store.get_schedule(conn, tenant, schedule_id) or row

        row = await self.env.db.transact(work)
        self._changed()
        return row

    def _pause(self, conn: Connection, row: ScheduleRow, now: int) -> None:
        store.update_schedule(conn, row.tenant, row.schedule_id, status=PAUSED, updated_us=now)

    def _resume(self, conn: Connection, row: ScheduleRow, now: int) -> None:
        if row.status == ACTIVE:
            return
        timing = timing_of(row)
        next_fire = timing.first_after(now)
        store.update_schedule(
            conn,
            row.tenant,
            row.schedule_id,
            status=ACTIVE,
            next_fire_us=next_fire,
            next_due_us=timing.due_us(next_fire),
            updated_us=now,
            paused_reason=None,
        )

    def _delete(self, conn: Connection, row: ScheduleRow, now: int) -> None:
        store.clear_buffered(conn, row.tenant, row.schedule_id)
        store.update_schedule(conn, row.tenant, row.schedule_id, status=DELETED, updated_us=now)

    def _clear_pending(self, conn: Connection, row: ScheduleRow, now: int) -> int:
        """Record every trigger up to now that has not fired as cleared; move past now."""
        timing = timing_of(row)
        pending = []
        if row.next_fire_us is not None and row.next_fire_us <= now:
            pending = timing.trigger.fires_between(row.next_fire_us, now, CATCHUP_LIMIT)
        for scheduled in pending:
            store.record_firing(conn, new_firing(row, scheduled, Outcome.CLEARED, now))
        count = len(pending) + store.clear_buffered(conn, row.tenant, row.schedule_id)
        next_fire = timing.first_after(now)
        store.update_schedule(
            conn,
            row.tenant,
            row.schedule_id,
            next_fire_us=next_fire,
            next_due_us=timing.due_us(next_fire),
            updated_us=now,
        )
        return count


def new_firing(row: ScheduleRow, scheduled_us: int, outcome: Outcome, now: int) -> FiringRow:
    """The record of one trigger of `row`."""
    return FiringRow(row.schedule_id, scheduled_us, row.tenant, outcome.value, None, None, now)


def inputs_of(row: ScheduleRow) -> dict[str, Any]:
    """The inputs every run of the schedule gets."""
    return dict(json.loads(row.inputs_json))


def _require(conn: Connection, tenant: str, schedule_id: str, *, lock: bool = False) -> ScheduleRow:
    row = store.get_schedule(conn, tenant, schedule_id, lock=lock)
    if row is None or row.status == DELETED:
        raise ScheduleNotFound(f"schedule {schedule_id} not found")
    return row
