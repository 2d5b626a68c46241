"""Quotas before leasing: a run may start only while its tenant (and DAG) has room.

`maxActive` caps runs running at once. `maxPerHour` with `burst` is a token bucket over run
starts, kept as a sliding window: at most `burst` starts within `burst / rate` seconds (one
hour when `burst` is unset). Runs over a limit stay queued; nothing fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stellaorch.store import Connection, controls
from stellaorch.store.controls import ALL_DAGS, QuotaRow, QuotaUsage
from stellaorch.store.dialect import try_lock_names
from stellaorch.store.queue import QueueItem
from stellaorch.store.runs import RunState

HOUR_US = 3_600_000_000
MAX_LIMIT = 1_000_000  # larger values are refused as absurd


def window_us(quota: QuotaRow) -> int:
    """How far back starts count against the bucket."""
    if not quota.max_per_hour:
        return HOUR_US
    bucket = quota.burst if quota.burst is not None else quota.max_per_hour
    return max(1, HOUR_US * bucket // quota.max_per_hour)


@dataclass
class QuotaState:
    """One quota and what counts against it now (updated as a claim admits runs)."""

    quota: QuotaRow
    usage: QuotaUsage
    admitted: int = 0
    ended: int = 0  # runs still running in the store that this transaction has ended

    @property
    def active(self) -> int:
        """Runs running now, as of this transaction."""
        return self.usage.active - self.ended

    def applies(self, dag_id: str) -> bool:
        """Whether runs of this DAG count against the quota."""
        return self.quota.dag_id in (ALL_DAGS, dag_id)

    def room(self) -> int:
        """How many more runs may start now."""
        q, free = self.quota, MAX_LIMIT
        if q.max_active is not None:
            free = min(free, q.max_active - self.active)
        if q.max_per_hour is not None:
            bucket = q.burst if q.burst is not None else q.max_per_hour
            free = min(free, bucket - self.usage.recent)
        return free - self.admitted

    def eligible_us(self, now_us: int) -> int | None:
        """When a run may start again: now, a time, or None (when a running run ends)."""
        if self.room() > 0:
            return now_us
        q, u = self.quota, self.usage
        if q.max_active is not None and self.active + self.admitted >= q.max_active:
            return None
        return (u.oldest_recent_us or now_us) + window_us(q)


@dataclass
class QuotaGate:
    """The quotas of the tenants a claim looks at; tenants without quotas pass untouched."""

    now_us: int
    states: dict[str, list[QuotaState]] = field(default_factory=dict)
    # Tenants whose quotas another claim is counting right now: none of their runs may start.
    contended: set[str] = field(default_factory=set)

    @classmethod
    def load(
        cls, conn: Connection, tenants: Iterable[str], now_us: int, *, claiming: bool = False
    ) -> QuotaGate:
        """One small read of the quota rows; one aggregate per quota a tenant has.

        Counting and starting must not interleave between two claims (both would see room
        for the same last slot), so a claim takes each quota tenant's lock, without waiting:
        a tenant another claim holds is skipped this time, and the claim looks again soon.
        """
        found = controls.list_quotas(conn, tenants)
        wanted = {q.tenant for q in found}
        held = try_lock_names(conn, "quota", wanted) if claiming else wanted
        gate = cls(now_us, contended=wanted - held)
        for quota in found:
            if quota.tenant in held:
                usage = controls.quota_usage(conn, quota, now_us - window_us(quota))
                gate.states.setdefault(quota.tenant, []).append(QuotaState(quota, usage))
        return gate

    def release(self, ended: Iterable[RunState]) -> None:
        """Stop counting runs this transaction ended (the store still says running)."""
        for run in ended:
            for state in self.states.get(run.tenant, []):
                if state.applies(run.dag_id):
                    state.ended += 1

    def blocked_dags(self, tenant: str) -> set[str]:
        """DAGs of the tenant ("*": all) whose queued runs may not start now."""
        if tenant in self.contended:
            return {ALL_DAGS}
        return {s.quota.dag_id for s in self.states.get(tenant, []) if s.room() <= 0}

    def next_eligible_us(self, tenant: str, dag_id: str = ALL_DAGS) -> int | None:
        """When a new run of the tenant (or DAG) may start: now, later, or None (unknown)."""
        times = [
            s.eligible_us(self.now_us)
            for s in self.states.get(tenant, [])
            if dag_id == ALL_DAGS or s.applies(dag_id)
        ]
        if None in times:
            return None
        return max([t for t in times if t is not None], default=self.now_us)

    def admit(self, items: list[QueueItem], runs: Mapping[str, RunState]) -> list[QueueItem]:
        """Items of running runs, and of queued runs that fit their quotas (counted as started)."""
        if not self.states and not self.contended:
            return items
        started: set[str] = set()
        kept: list[QueueItem] = []
        for item in items:
            run = runs[item.run_id]
            if run.status == "queued" and item.run_id not in started:
                if not self._start(run):
                    continue
                started.add(item.run_id)
            kept.append(item)
        return kept

    def _start(self, run: RunState) -> bool:
        """Count a new run against every quota that covers it, if all have room."""
        if run.tenant in self.contended:
            return False
        covering = [s for s in self.states.get(run.tenant, []) if s.applies(run.dag_id)]
        if any(s.room() <= 0 for s in covering):
            return False
        for state in covering:
            state.admitted += 1
        return True

    def wake_us(self) -> int | None:
        """The earliest time a blocked tenant gets room by the clock alone."""
        times = [
            s.eligible_us(self.now_us)
            for states in self.states.values()
            for s in states
            if s.room() <= 0
        ]
        return min((t for t in times if t is not None), default=None)
