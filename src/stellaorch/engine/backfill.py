"""Backfill: create the runs of a schedule's cron fire times in a past window, once each.

Every fire time in [from, to) gets the runToken `backfill:<scheduleId>:<time>` and the
trigger `backfill:<scheduleId>`, so running the same backfill again finds the runs it made. A
fire time that the scheduler already started (a run under its `schedule:` token) is left
alone. All runs of one backfill and its audit entry are one transaction: all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import StellaError, ValidationError
from stellaorch.domain.firing import backfill_token, run_token
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.providers import format_utc
from stellaorch.engine.create import create_runs
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.engine.requests import Created, RunRequest
from stellaorch.engine.schedules import ScheduleNotFound, inputs_of, schedule_audit, timing_of
from stellaorch.store import Connection, runs
from stellaorch.store import schedules as store
from stellaorch.store.schedules import ScheduleRow

CREATED, EXISTING, SCHEDULED, PLANNED = "created", "existing", "scheduled", "would_create"


class BackfillTooLarge(ValidationError):
    """The window holds more fire times than one backfill may create."""

    code = "BACKFILL_TOO_LARGE"


@dataclass(frozen=True)
class BackfillWindow:
    """Which schedule to backfill, over which window [from_us, to_us), and whether for real."""

    tenant: str
    schedule_id: str
    from_us: int
    to_us: int
    dry_run: bool = False


@dataclass(frozen=True)
class BackfillItem:
    """One fire time of the window: its runToken, what became of it, and its run (if any)."""

    scheduled_us: int
    run_token: str
    outcome: str  # created | existing | scheduled | would_create
    run_id: str | None


@dataclass(frozen=True)
class Backfilled:
    """What a backfill did (or, dry, would do), fire time by fire time, oldest first."""

    window: BackfillWindow
    items: list[BackfillItem]

    def count(self, outcome: str) -> int:
        """How many fire times ended with `outcome`."""
        return sum(1 for item in self.items if item.outcome == outcome)


class BackfillService:
    """Backfills of one tenant's schedules; each one is audited with the operator's reason."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    async def backfill(self, window: BackfillWindow, operator: Operator) -> Backfilled:
        """Create (or, dry, list) the runs of the window's fire times; publish what was new."""
        if window.dry_run:
            return await self.env.db.read(lambda c: self._plan(c, window))
        result, entries = await self.env.db.transact(lambda c: self._apply(c, window, operator))
        self.env.bus.publish(entries)
        return result

    def _fire_times(self, row: ScheduleRow, window: BackfillWindow) -> list[int]:
        """The schedule's fire times in [from, to), refused beyond the operator's bound."""
        now = self.env.clock.now_us()
        if window.from_us >= window.to_us:
            raise ValidationError("backfill needs from < to")
        if window.to_us > now:
            raise ValidationError(f"backfill covers the past: to must be at most {format_utc(now)}")
        cap = self.env.settings.max_backfill_runs
        fires = timing_of(row).trigger.fires_between(window.from_us, window.to_us - 1, cap + 1)
        if len(fires) > cap:
            raise BackfillTooLarge(
                f"the window holds more than {cap} fire times of schedule {row.schedule_id}; "
                "backfill a shorter window (STELLA_ORCH_MAX_BACKFILL_RUNS)",
                details={"limit": cap},
            )
        return fires

    def _plan(self, conn: Connection, window: BackfillWindow) -> Backfilled:
        """Each fire time with the run it already has, or `would_create`."""
        return self._items(conn, _require(conn, window.tenant, window.schedule_id), window)

    def _items(self, conn: Connection, row: ScheduleRow, window: BackfillWindow) -> Backfilled:
        """The window's fire times of `row`, each with the run it already has (if any)."""
        fires = self._fire_times(row, window)
        keys = [(row.tenant, row.dag_id, t) for f in fires for t in _tokens(row, f)]
        known = runs.find_by_tokens(conn, keys)
        items = []
        for scheduled in fires:
            theirs, own = _tokens(row, scheduled)
            by_schedule = known.get((row.tenant, row.dag_id, theirs))
            mine = known.get((row.tenant, row.dag_id, own))
            if by_schedule is not None:
                items.append(BackfillItem(scheduled, theirs, SCHEDULED, by_schedule.run_id))
            elif mine is not None:
                items.append(BackfillItem(scheduled, own, EXISTING, mine.run_id))
            else:
                items.append(BackfillItem(scheduled, own, PLANNED, None))
        return Backfilled(window, items)

    def _apply(
        self, conn: Connection, window: BackfillWindow, operator: Operator
    ) -> tuple[Backfilled, list[LedgerEntry]]:
        """Create the planned runs, all or none, with the audit entry of the backfill."""
        row = _require(conn, window.tenant, window.schedule_id)
        plan = self._items(conn, row, window)
        wanted = [item for item in plan.items if item.outcome == PLANNED]
        results = create_runs(conn, self.env, [_request(row, item) for item in wanted])
        made: dict[int, Created] = {}
        for item, result in zip(wanted, results, strict=True):
            if isinstance(result, StellaError):
                raise result  # the transaction rolls back: a backfill never half-happens
            made[item.scheduled_us] = result
        items = [_settled(item, made.get(item.scheduled_us)) for item in plan.items]
        done = Backfilled(window, items)
        entry = schedule_audit(
            operator,
            row.tenant,
            "schedule.backfill",
            row.schedule_id,
            fromUtc=format_utc(window.from_us),
            toUtc=format_utc(window.to_us),
            created=done.count(CREATED),
            existing=done.count(EXISTING),
            scheduled=done.count(SCHEDULED),
        )
        record_audit(conn, entry, self.env.clock.now_us())
        return done, [e for c in made.values() for e in c.entries]


def _tokens(row: ScheduleRow, scheduled_us: int) -> tuple[str, str]:
    """The runTokens the scheduler and a backfill give the same fire time."""
    return run_token(row.schedule_id, scheduled_us), backfill_token(row.schedule_id, scheduled_us)


def _request(row: ScheduleRow, item: BackfillItem) -> RunRequest:
    """The run of one backfilled fire time."""
    return RunRequest(
        tenant=row.tenant,
        dag_id=row.dag_id,
        inputs=inputs_of(row),
        run_token=item.run_token,
        version=row.dag_version,
        trigger=f"backfill:{row.schedule_id}",
    )


def _settled(item: BackfillItem, created: Created | None) -> BackfillItem:
    """A planned item once its run exists (an earlier backfill's run counts as existing)."""
    if created is None:
        return item
    outcome = CREATED if created.created else EXISTING
    return BackfillItem(item.scheduled_us, item.run_token, outcome, created.run.run_id)


def _require(conn: Connection, tenant: str, schedule_id: str) -> ScheduleRow:
    row = store.get_schedule(conn, tenant, schedule_id)
    if row is None or row.status == "deleted":
        raise ScheduleNotFound(f"schedule {schedule_id} not found")
    return row
