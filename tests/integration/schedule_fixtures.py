"""Fixtures for the schedule tests: an engine on a fresh store whose clock moves only when told.

Test modules import what they use (`from schedule_fixtures import clocked, Clocked`), so they
stay independent of the shared conftest beyond its store provisioning.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from stellaorch.domain.firing import jitter_us
from stellaorch.domain.providers import format_utc, parse_utc
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.scheduler import Scheduler, Tick
from stellaorch.engine.schedules import Operator, ScheduleSpec
from stellaorch.settings import Settings
from stellaorch.store.database import Database
from stellaorch.store.migrate import upgrade
from stellaorch.store.schedules import ScheduleRow

TENANT = "acme"
T0 = parse_utc("2026-01-01T00:00:00Z")
OPERATOR = Operator("tester", "schedule test", "TICKET-1")


def dag(dag_id: str = "nightly", version: int | str = 1, **step: Any) -> dict[str, Any]:
    """A one-step DAG spec (noop unless the step says otherwise)."""
    return {"dagId": dag_id, "version": version, "steps": [{"id": "s", "plugin": "noop", **step}]}


def at(text_utc: str) -> str:
    """A time as the API and tokens print it (for readable assertions)."""
    return str(format_utc(parse_utc(text_utc)))


class ManualClock:
    """A clock that moves only when told: forward by seconds, or to an exact instant."""

    def __init__(self, start_us: int = T0) -> None:
        self._now = start_us

    def now_us(self) -> int:
        """The current (frozen) time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by `seconds`."""
        self._now += round(seconds * 1_000_000)

    def set(self, us: int) -> None:
        """Move to an exact instant."""
        self._now = us


class Clocked:
    """An Orchestrator with a ManualClock, plus the moves the schedule tests repeat."""

    def __init__(self, orchestrator: Orchestrator, clock: ManualClock) -> None:
        self.orchestrator = orchestrator
        self.clock = clock

    @property
    def env(self) -> EngineEnv:
        return self.orchestrator.env

    async def publish(self, document: dict[str, Any], tenant: str = TENANT) -> None:
        """Publish a DAG version."""
        await self.orchestrator.catalog.publish(tenant, parse_spec(document))

    async def set_enabled(self, dag_id: str, version: str, enabled: bool) -> None:
        """Enable or disable a version."""
        await self.orchestrator.catalog.set_enabled(TENANT, dag_id, version, enabled)

    async def schedule(self, dag_id: str = "nightly", cron: str = "* * * * *", **kw: Any) -> str:
        """Create a schedule; returns its id."""
        spec = ScheduleSpec(TENANT, dag_id, cron, **kw)
        return (await self.orchestrator.schedules.create(spec, OPERATOR)).schedule_id

    async def get(self, schedule_id: str) -> ScheduleRow:
        """The stored schedule."""
        return await self.orchestrator.schedules.get(TENANT, schedule_id)

    def scheduler(self, **kw: Any) -> Scheduler:
        """A scheduler on this engine (not started: tests call `step`)."""
        return Scheduler(self.env, self.orchestrator.runs, **kw)

    async def step_at(self, scheduler: Scheduler, when: str) -> Tick:
        """Move the clock to `when` (UTC) and let the scheduler take one pass."""
        self.clock.set(parse_utc(when))
        return await scheduler.step()

    async def expire_lease(self) -> None:
        """Let the scheduler lease lapse, as if its holder had died."""
        await self.sql("UPDATE leader_leases SET expires_us = 0")

    async def firings(self, schedule_id: str) -> list[tuple[str, str, str | None]]:
        """(scheduledUtc, outcome, runId) of every recorded trigger, oldest first."""
        rows = await self.sql(
            "SELECT scheduled_us, outcome, run_id FROM schedule_firings "
            "WHERE schedule_id = :s ORDER BY scheduled_us",
            s=schedule_id,
        )
        return [(str(format_utc(r["scheduled_us"])), r["outcome"], r["run_id"]) for r in rows]

    async def outcomes(self, schedule_id: str) -> list[str]:
        """The outcome of every recorded trigger, oldest first."""
        return [outcome for _, outcome, _ in await self.firings(schedule_id)]

    async def runs_of(self, schedule_id: str) -> list[dict[str, Any]]:
        """Runs the schedule started, oldest trigger first."""
        return await self.sql(
            "SELECT run_id, run_token, status, dag_version, inputs_json FROM runs "
            'WHERE tenant = :t AND "trigger" = :trigger ORDER BY run_token',
            t=TENANT,
            trigger=f"schedule:{schedule_id}",
        )

    async def due_at(self, schedule_id: str) -> str:
        """When the schedule's next trigger is due (UTC), jitter included."""
        row = await self.get(schedule_id)
        assert row.next_fire_us is not None
        jitter = jitter_us(row.schedule_id, row.next_fire_us, row.jitter_seconds)
        return str(format_utc(row.next_fire_us + jitter))

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Raw SQL in its own transaction."""

        def work(conn: Any) -> list[dict[str, Any]]:
            result = conn.execute(text(statement), params)
            return [dict(r) for r in result.mappings()] if result.returns_rows else []

        return await self.env.db.transact(work)


def settings_for(url: str, **overrides: Any) -> Settings:
    """Settings for schedule tests: quick polling, leases that never expire by accident."""
    values: dict[str, Any] = {
        "database_url": url,
        "lease_ttl_seconds": 10.0,
        "poll_interval_seconds": 0.05,
        "schedule_min_interval_seconds": 1,  # the tests' crons fire every second
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def open_clocked(url: str, clock: ManualClock | None = None) -> AsyncIterator[Clocked]:
    """An engine with a manual clock at T0 on the store at `url`."""
    clock = clock or ManualClock(T0)
    settings = settings_for(url)
    db = Database.open(url)
    upgrade(db.engine)
    orchestrator = Orchestrator(EngineEnv.build(db, settings, clock=clock))
    try:
        yield Clocked(orchestrator, clock)
    finally:
        await orchestrator.close()


@pytest.fixture
async def clocked(new_store_url: Callable[[], str]) -> AsyncIterator[Clocked]:
    """An engine with a manual clock on a fresh store."""
    async with open_clocked(new_store_url()) as engine:
        yield engine
