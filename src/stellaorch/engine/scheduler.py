"""The scheduler: the leader fires due cron triggers as runs, each trigger exactly once.

One tick is three steps. (1) In one transaction, fenced by the leader lease: decide every
due trigger (started, skipped_overlap, buffered, rejected_disabled), record it — a trigger's
row is unique, so a second scheduler's or a retry's record is refused — and move each
schedule to its next trigger. (2) Create the runs of started triggers through
`RunService.create`, with a runToken derived from (schedule, scheduled time), so a repeat
finds the same run. (3) Record each trigger's run. A crash between (1) and (3) leaves started
triggers without a run; the next tick (of any scheduler) creates them with the same token.

While a tenant's queue drains, its due triggers are recorded `skipped_draining` and each
schedule moves on: a drain means no new work, so they are not caught up after `queue resume`
(the catch-up policy is for scheduler downtime only). `engine.backfill` runs them on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace

from stellaorch.domain.errors import (
    DagDisabled,
    DagNotFound,
    QueueDraining,
    StellaError,
    StoreUnavailable,
)
from stellaorch.domain.firing import CATCHUP_LIMIT, Outcome, Overlap, run_token
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.providers import worker_identity
from stellaorch.domain.status import TERMINAL_RUN
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Created, RunRequest
from stellaorch.engine.runs import RunService
from stellaorch.engine.schedule_holds import disabled_reason, hold, system
from stellaorch.engine.schedules import ACTIVE, inputs_of, new_firing, timing_of, version_enabled
from stellaorch.store import Connection, controls, leases
from stellaorch.store import schedules as store
from stellaorch.store.schedules import FiringRow, ScheduleRow

log = logging.getLogger("stellaorch.scheduler")

LEASE_NAME = "scheduler"
US = 1_000_000
DAY_US = 86_400 * US
PRUNE_EVERY_US = 600 * US  # the leader deletes old triggers this often, a batch at a time
PRUNE_BATCH = 5_000


@dataclass(frozen=True)
class Firing:
    """A started trigger that needs its run."""

    schedule: ScheduleRow
    scheduled_us: int

    def request(self) -> RunRequest:
        """The run this trigger starts."""
        row = self.schedule
        return RunRequest(
            tenant=row.tenant,
            dag_id=row.dag_id,
            inputs=inputs_of(row),
            run_token=run_token(row.schedule_id, self.scheduled_us),
            version=row.dag_version,
            trigger=f"schedule:{row.schedule_id}",
        )


@dataclass
class Tick:
    """What one pass did: whether it led, the outcomes it recorded, the runs it started."""

    leader: bool
    outcomes: Counter[str] = field(default_factory=Counter)
    run_ids: list[str] = field(default_factory=list)
    next_due_us: int | None = None
    buffered: bool = False


@dataclass
class _Claim:
    leader: bool
    firings: list[Firing] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    buffered: bool = False
    moves: list[dict[str, int | str | None]] = field(default_factory=list)
    enabled: dict[tuple[str, str, str | None], bool] = field(default_factory=dict)

    def version_enabled(self, conn: Connection, row: ScheduleRow) -> bool:
        """Whether the schedule's version takes runs (asked once per version per claim)."""
        key = (row.tenant, row.dag_id, row.dag_version)
        if key not in self.enabled:
            self.enabled[key] = version_enabled(conn, *key)
        return self.enabled[key]


class Scheduler:
    """Fires due triggers while it holds the leader lease; a standby waits to take over."""

    def __init__(
        self,
        env: EngineEnv,
        runs: RunService,
        *,
        holder: str | None = None,
        lease_ttl_seconds: float = 10.0,
        poll_seconds: float = 1.0,
        grace_seconds: float = 2.0,
        batch: int = 500,
    ) -> None:
        self.env = env
        self.runs = runs
        self.holder = holder or f"{worker_identity()}:{env.ids.lease_id()[:8]}"
        self.ttl_us = int(lease_ttl_seconds * US)
        self.poll_us = int(poll_seconds * US)
        self.grace_us = int(grace_seconds * US)
        self.batch = batch
        self._leader = False
        self._renew_at = 0
        self._buffered = False
        self._prune_at = 0
        self.retention_us = int(env.settings.schedule_firing_retention_days * DAY_US)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def leader(self) -> bool:
        """True while this scheduler holds the lease (as of its last renewal)."""
        return self._leader

    def wake(self) -> None:
        """Look at the schedules now (a schedule changed)."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the loop to end; it gives the lease up on the way out."""
        self._stopping.set()
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the lease and fire triggers until `stop()` (cancelling keeps the lease: a crash)."""
        unsubscribe = self.env.bus.subscribe(self._on_entry)
        try:
            while not self._stopping.is_set():
                await self._sleep(await self._cycle())
        finally:
            unsubscribe()
        await self._release()

    async def _cycle(self) -> float:
        """One pass; returns how long to sleep before the next."""
        try:
            tick = await self.step()
        except StoreUnavailable as exc:
            log.warning("scheduler.store_unavailable", extra={"error": str(exc)})
            self._leader = False
            return self.poll_us / US
        except Exception:  # a bug must not stop every schedule: log it, try again later
            log.exception("scheduler.tick_failed", extra={"holder": self.holder})
            return self.poll_us / US
        return self._delay(tick) / US

    def _delay(self, tick: Tick) -> int:
        """Until the next due trigger, the next renewal or the next poll, whichever is first."""
        now = self.env.clock.now_us()
        until = [self.poll_us]
        if tick.leader:
            until.append(self._renew_at - now)
            if tick.next_due_us is not None:
                until.append(tick.next_due_us - now)
        return max(0, min(until))

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _on_entry(self, entry: LedgerEntry) -> None:
        """A run ended: a buffered trigger may start now."""
        if self._buffered and entry.step_id is None and entry.status in TERMINAL_RUN:
            self._wake.set()

    async def _release(self) -> None:
        if self._leader:
            with contextlib.suppress(StellaError):
                await self.env.db.transact(lambda c: leases.release(c, LEASE_NAME, self.holder))
            self._leader = False

    # -- one pass -------------------------------------------------------------------------
    async def step(self) -> Tick:
        """Take or renew the lease when due, then fire what is due if this scheduler leads."""
        now = self.env.clock.now_us()
        if not self._leader or now >= self._renew_at:
            await self._acquire(now)
        if not self._leader:
            return Tick(leader=False)
        return await self.tick()

    async def _acquire(self, now: int) -> None:
        was = self._leader
        self._leader = await self.env.db.transact(
            lambda c: leases.acquire(c, LEASE_NAME, self.holder, now, self.ttl_us)
        )
        if self._leader:
            self._renew_at = now + self.ttl_us // 3
        if self._leader != was:
            role = "leading" if self._leader else "standby"
            log.info("scheduler.%s holder=%s", role, self.holder)

    async def tick(self) -> Tick:
        """Fire every due trigger (fenced by the lease) and record the runs it started."""
        now = self.env.clock.now_us()
        claim = await self.env.db.transact(lambda c: self._claim(c, now))
        if not claim.leader:
            self._leader = False
            return Tick(leader=False)
        tick = Tick(True, claim.outcomes, buffered=claim.buffered)
        results = await asyncio.gather(*(self._create(f) for f in claim.firings))
        done = [(f, r) for f, r in zip(claim.firings, results, strict=True) if r is not None]
        if done:
            await self.env.db.transact(lambda c: self._record(c, done))
            self._tally(done, tick)
        tick.next_due_us = await self.env.db.transact(store.earliest_due_us)
        self._buffered = tick.buffered
        if now >= self._prune_at:
            await self.prune(now)
        return tick

    async def prune(self, now: int) -> int:
        """Delete a batch of triggers older than the retention; returns how many went."""
        before = now - self.retention_us
        pruned = await self.env.db.transact(lambda c: store.prune_firings(c, before, PRUNE_BATCH))
        # A full batch means more are waiting: come back at the next pass, not in 10 minutes.
        self._prune_at = now if pruned >= PRUNE_BATCH else now + PRUNE_EVERY_US
        if pruned:
            log.info("scheduler.pruned", extra={"firings": pruned})
        return pruned

    # -- (1) decide and record triggers, on the store thread ------------------------------
    def _claim(self, conn: Connection, now: int) -> _Claim:
        if not leases.holds(conn, LEASE_NAME, self.holder, now):
            return _Claim(leader=False)
        claim = _Claim(leader=True)
        for firing in store.open_firings(conn, self.batch):
            self._reopen(conn, firing, claim)
        for row in store.due_schedules(conn, now, self.batch):
            self._fire(conn, row, now, claim)
        store.advance_schedules(conn, claim.moves)
        return claim

    def _reopen(self, conn: Connection, firing: FiringRow, claim: _Claim) -> None:
        """Retry a started trigger without a run; start a buffered one once nothing runs."""
        row = store.get_schedule(conn, firing.tenant, firing.schedule_id)
        if row is None:
            return
        if firing.outcome == Outcome.STARTED.value:
            claim.firings.append(Firing(row, firing.scheduled_us))
            return
        claim.buffered = True
        if row.status != ACTIVE or store.run_in_flight(conn, row.schedule_id):
            return
        outcome = Outcome.STARTED if claim.version_enabled(conn, row) else Outcome.REJECTED_DISABLED
        store.set_firing(
            conn, row.schedule_id, firing.scheduled_us, outcome=outcome.value, expect="buffered"
        )
        self._count(claim, row, firing.scheduled_us, outcome)

    def _fire(self, conn: Connection, row: ScheduleRow, now: int, claim: _Claim) -> None:
        """Decide and record the schedule's due triggers, then move it to the next one."""
        assert row.next_fire_us is not None
        timing = timing_of(row)
        plan = timing.plan(row.next_fire_us, now, self.grace_us, CATCHUP_LIMIT)
        if plan.dropped:
            log.info(
                "schedule.missed",
                extra={
                    "tenant": row.tenant,
                    "schedule_id": row.schedule_id,
                    "dropped": plan.dropped,
                },
            )
        enabled = claim.version_enabled(conn, row) if plan.fire else True
        held = bool(plan.fire) and bool(controls.draining_tenants(conn, [row.tenant]))
        if not (enabled or held):  # record the trigger once, then pause instead of each tick
            plan = replace(plan, fire=plan.fire[:1])
            hold(conn, row, system(disabled_reason(row)), now)
        for scheduled in plan.fire:
            outcome = Outcome.SKIPPED_DRAINING if held else self._decide(conn, row, enabled)
            if store.record_firing(conn, new_firing(row, scheduled, outcome, now)):
                self._count(claim, row, scheduled, outcome)
        claim.moves.append(
            {
                "b_id": row.schedule_id,
                "b_next_fire": plan.next_fire_us,
                "b_next_due": timing.due_us(plan.next_fire_us),
                "b_last_fire": plan.fire[-1] if plan.fire else row.last_fire_us,
            }
        )

    def _decide(self, conn: Connection, row: ScheduleRow, enabled: bool) -> Outcome:
        """The overlap policy: start, buffer or skip (or reject: the version is disabled)."""
        if not enabled:
            return Outcome.REJECTED_DISABLED
        if row.overlap == Overlap.ALLOW.value or not store.run_in_flight(conn, row.schedule_id):
            return Outcome.STARTED
        if row.overlap == Overlap.BUFFER_ONE.value and not store.has_buffered(
            conn, row.schedule_id
        ):
            return Outcome.BUFFERED
        return Outcome.SKIPPED_OVERLAP

    def _count(self, claim: _Claim, row: ScheduleRow, scheduled: int, outcome: Outcome) -> None:
        """Note a decision; started triggers are counted once their run exists."""
        if outcome is Outcome.STARTED:
            claim.firings.append(Firing(row, scheduled))
            return
        claim.outcomes[outcome.value] += 1
        claim.buffered = claim.buffered or outcome is Outcome.BUFFERED

    # -- (2) create runs, (3) record them -------------------------------------------------
    async def _create(self, firing: Firing) -> Created | StellaError | None:
        """The trigger's run (existing or new), its refusal, or None to retry later."""
        try:
            # Shielded: a scheduler cancelled mid-tick must not cancel a batched create.
            return await asyncio.shield(self.runs.create(firing.request()))
        except StoreUnavailable:
            return None
        except StellaError as exc:
            return exc

    def _record(self, conn: Connection, done: list[tuple[Firing, Created | StellaError]]) -> None:
        """Record each trigger's run, or why it has none (safe to run again)."""
        for firing, result in done:
            row, scheduled = firing.schedule, firing.scheduled_us
            if isinstance(result, Created):
                store.set_firing(
                    conn, row.schedule_id, scheduled, outcome="started", run_id=result.run.run_id
                )
            else:
                store.set_firing(
                    conn,
                    row.schedule_id,
                    scheduled,
                    outcome=_refusal(result).value,
                    detail=result.code,
                )

    def _tally(self, done: list[tuple[Firing, Created | StellaError]], tick: Tick) -> None:
        """Count what the recorded triggers became."""
        for firing, result in done:
            if isinstance(result, Created):
                tick.run_ids.append(result.run.run_id)
                tick.outcomes[Outcome.STARTED.value] += 1
                continue
            tick.outcomes[_refusal(result).value] += 1
            sid = firing.schedule.schedule_id
            log.warning("schedule.rejected", extra={"schedule_id": sid, "code": result.code})


def _refusal(error: StellaError) -> Outcome:
    """The outcome of a trigger whose run was refused."""
    if isinstance(error, DagDisabled | DagNotFound):
        return Outcome.REJECTED_DISABLED
    if isinstance(error, QueueDraining):
        return Outcome.SKIPPED_DRAINING
    return Outcome.REJECTED_ERROR
