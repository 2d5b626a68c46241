"""SLO status per tenant (from the store, the request tally and the stream tally), the
tenant's own objectives, and the sampler that records each tenant's backlog per 5 minutes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import StellaError
from stellaorch.domain.slo import (
    BACKLOG_WINDOW_US,
    BUDGET_WINDOW_US,
    DEFAULTS,
    WINDOWS_US,
    Counts,
    Objective,
    SloId,
    SloStatus,
    checked_objective,
)
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.observability.tally import WindowTally
from stellaorch.store import Connection, health
from stellaorch.store import slo as store

log = logging.getLogger("stellaorch.slo")

# Requests are one service-wide figure: the key every request is counted under.
ALL_REQUESTS = "*"
SAMPLE_SECONDS = 60.0


@dataclass(frozen=True)
class Tallies:
    """The in-process figures: requests answered (all tenants) and stream events per tenant."""

    requests: WindowTally
    stream: WindowTally


class SloService:
    """Reads and sets a tenant's SLOs."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    async def targets(self, tenant: str) -> dict[SloId, Objective]:
        """Every SLO's objective for the tenant: its own where it set one, else the default."""
        own = await self.env.db.read(lambda c: store.objectives(c, tenant))
        return {
            slo: Objective(own[slo].objective, own[slo].threshold) if slo in own else default
            for slo, default in DEFAULTS.items()
        }

    async def status(self, tenant: str, tallies: Tallies) -> list[SloStatus]:
        """Each SLO of the tenant now, over the 1 h, 6 h and 28 d windows."""
        targets = await self.targets(tenant)
        now = self.env.clock.now_us()

        def read(conn: Connection) -> dict[SloId, dict[str, Counts]]:
            return _store_counts(conn, tenant, now, targets)

        counted = await self.env.db.read(read)
        statuses = [
            SloStatus(slo, targets[slo], windows, "tenant") for slo, windows in counted.items()
        ]
        for slo, tally, key in (
            (SloId.API_AVAILABILITY, tallies.requests, ALL_REQUESTS),
            (SloId.STREAM_DELIVERY, tallies.stream, tenant),
        ):
            windows = {name: tally.counts(key, now - span) for name, span in WINDOWS_US.items()}
            statuses.append(SloStatus(slo, targets[slo], windows, "process"))
        order = list(SloId)
        return sorted(statuses, key=lambda s: order.index(s.slo))

    async def set_objective(
        self,
        tenant: str,
        slo: SloId,
        objective: float,
        threshold: float | None,
        operator: Operator,
    ) -> Objective:
        """Set the tenant's own objective for `slo` (audited); the checked target."""
        target = checked_objective(slo, objective, threshold)
        now = self.env.clock.now_us()
        row = store.ObjectiveRow(slo.value, target.objective, target.threshold, now, operator.actor)
        details = {"objective": target.objective, "threshold": target.threshold}
        audit = operator.entry(tenant, "slo.set", slo.value, details)

        def work(conn: Connection) -> None:
            store.set_objective(conn, tenant, row)
            record_audit(conn, audit, now)

        await self.env.db.transact(work)
        return target


def _store_counts(
    conn: Connection, tenant: str, now: int, targets: dict[SloId, Objective]
) -> dict[SloId, dict[str, Counts]]:
    """The SLO figures the store holds: runs by end time and sampled backlog windows."""
    slow_us = int((targets[SloId.RUN_DURATION].threshold or 0) * 1_000_000)
    backlog = targets[SloId.BACKLOG].threshold or 0
    out: dict[SloId, dict[str, Counts]] = {
        SloId.RUN_DURATION: {},
        SloId.RUN_FAILURE_RATE: {},
        SloId.BACKLOG: {},
    }
    for name, span in WINDOWS_US.items():
        ended, failed, timed, slow = store.run_counts(conn, tenant, now - span, slow_us)
        out[SloId.RUN_FAILURE_RATE][name] = Counts(ended, failed)
        out[SloId.RUN_DURATION][name] = Counts(timed, slow)
        total, bad = store.window_counts(conn, tenant, SloId.BACKLOG, now - span, backlog)
        out[SloId.BACKLOG][name] = Counts(total, bad)
    return out


class BacklogSampler:
    """Every minute: each tenant's queue depth into its 5-minute window, the old ones pruned.

    Any number of processes may sample at once: a window keeps the highest depth written.
    """

    def __init__(self, env: EngineEnv, interval_seconds: float = SAMPLE_SECONDS) -> None:
        self.env = env
        self.interval = interval_seconds
        self._stop = asyncio.Event()

    async def sample(self) -> int:
        """One sample of every tenant with queued items; how many tenants were written."""
        now = self.env.clock.now_us()
        window = now - now % BACKLOG_WINDOW_US

        def work(conn: Connection) -> int:
            stats = health.all_queue_stats(conn)
            store.record_peak(conn, store.SAMPLED, SloId.BACKLOG, window, len(stats))
            for s in stats:
                store.record_peak(conn, s.tenant, SloId.BACKLOG, window, s.depth)
            store.prune_windows(conn, now - BUDGET_WINDOW_US - BACKLOG_WINDOW_US)
            return len(stats)

        return await self.env.db.transact(work)

    async def run(self) -> None:
        """Sample until stopped; a store that is down is tried again at the next interval."""
        while not self._stop.is_set():
            try:
                await self.sample()
            except StellaError as exc:
                log.warning("slo.sample_failed", extra={"code": exc.code})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        """Ask the loop to end after its sample in progress."""
        self._stop.set()
