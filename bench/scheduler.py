"""Scheduler fire accuracy on the embedded SQLite store: N schedules firing every second.

Usage: .venv/bin/python bench/scheduler.py [--schedules 1,10,100] [--seconds 10]
For each N: N schedules of `* * * * * *` (6 fields: every second) on a one-step DAG, the
in-process scheduler and a worker running; after the measuring window, the lateness of each
trigger = run createdUtc - scheduled time. Prints a table; never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.schedules import Operator, ScheduleSpec
from stellaorch.settings import Settings
from stellaorch.store.schema import runs, schedule_firings

TENANT = "bench"
TARGET_MS = 250.0
DAG = {"dagId": "tick", "version": 1, "steps": [{"id": "s", "plugin": "noop"}]}
OPERATOR = Operator("bench", "scheduler benchmark")


@dataclass(frozen=True)
class Result:
    """Lateness figures of one scenario."""

    schedules: int
    triggers: int
    expected: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> bool:
        """Every trigger within the target, and none missing."""
        return self.max_ms <= TARGET_MS and self.triggers >= self.expected


def _lateness(conn: Connection) -> list[int]:
    """Run creation minus scheduled time, per started trigger (microseconds)."""
    f = schedule_firings.c
    query = select(runs.c.created_us - f.scheduled_us).join(runs, runs.c.run_id == f.run_id)
    return [int(v) for (v,) in conn.execute(query)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _schedules(orch: Orchestrator, count: int) -> None:
    await orch.catalog.publish(TENANT, parse_spec(DAG))
    spec = ScheduleSpec(TENANT, "tick", "* * * * * *", overlap="allow", catchup="all")
    for _ in range(count):
        await orch.schedules.create(spec, OPERATOR)


async def scenario(workdir: Path, count: int, seconds: float) -> Result:
    """Run N every-second schedules for `seconds` and measure their lateness."""
    settings = Settings(database_url=f"sqlite:///{workdir}/sched-{count}.db")
    orch = Orchestrator.open(settings)
    try:
        await _schedules(orch, count)
        orch.start_worker()
        orch.start_scheduler()
        started = time.time()
        await asyncio.sleep(seconds)
        await orch.stop_scheduler()
        elapsed = time.time() - started
        late_ms = [us / 1000 for us in await orch.env.db.transact(_lateness)]
    finally:
        await orch.close()
    expected = count * int(elapsed - 1)
    return Result(
        count,
        len(late_ms),
        expected,
        statistics.median(late_ms),
        _percentile(late_ms, 0.99),
        max(late_ms),
    )


def print_table(results: list[Result]) -> None:
    """One line per scenario."""
    head = f"{'schedules':>9} {'triggers':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  target"
    print(head)
    print("-" * len(head))
    for r in results:
        verdict = "ok" if r.ok else "MISSED"
        print(
            f"{r.schedules:>9} {r.triggers:>8} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
            f"{r.max_ms:>8.1f}  <= {TARGET_MS:.0f} ms {verdict}"
        )


async def main(counts: list[int], seconds: float) -> None:
    """Run every scenario on its own database file."""
    with tempfile.TemporaryDirectory() as tmp:
        results = [await scenario(Path(tmp), n, seconds) for n in counts]
    print_table(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", default="1,10,100", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window")
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.schedules.split(",")], args.seconds))
