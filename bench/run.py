"""Engine benchmarks on the embedded SQLite store: chain overhead, fan-out, many runs, RSS.

Usage: .venv/bin/python bench/run.py [--quick]
Prints a table; never run as a test. Each scenario uses a fresh database file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.execution import RunRequest
from stellaorch.settings import Settings
from stellaorch.store.schema import ledger_entries, runs

TENANT = "bench"


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measure: str
    value: float
    unit: str
    target: str
    ok: bool


def _chain_spec(n: int) -> dict[str, Any]:
    ids = [f"s{i:05d}" for i in range(n)]
    return {
        "dagId": "chain",
        "version": 1,
        "steps": [{"id": s, "plugin": "noop"} for s in ids],
        "edges": [{"from": a, "to": b} for a, b in itertools.pairwise(ids)],
    }


def _fan_spec(n: int) -> dict[str, Any]:
    return {
        "dagId": f"fan{n}",
        "version": 1,
        "steps": [{"id": f"s{i:05d}", "plugin": "noop"} for i in range(n)],
    }


async def _with_orchestrator(
    workdir: Path, concurrency: int, body: Callable[[Orchestrator], Awaitable[list[Row]]]
) -> list[Row]:
    settings = Settings(
        database_url=f"sqlite:///{workdir}/bench-{time.monotonic_ns()}.db",
        worker_concurrency=concurrency,
    )
    orch = Orchestrator.open(settings)
    try:
        return await body(orch)
    finally:
        await orch.close()


async def bench_chain(orch: Orchestrator, n: int) -> list[Row]:
    """Sequential chain: wall time per step, and the median gap between consecutive steps."""
    await orch.catalog.publish(TENANT, parse_spec(_chain_spec(n)))
    orch.start_worker()
    start = time.perf_counter()
    created = await orch.runs.create(RunRequest(TENANT, "chain", {}))
    status = await orch.runs.wait(TENANT, created.run.run_id)
    wall = time.perf_counter() - start
    gaps = await _step_gaps_ms(orch, created.run.run_id)
    per_step = wall / n * 1000
    return [
        Row(
            f"chain of {n}",
            "wall time per step",
            per_step,
            "ms",
            "<= 2 ms",
            status == "completed" and per_step <= 2.0,
        ),
        Row(
            f"chain of {n}",
            "median step-to-step gap",
            statistics.median(gaps),
            "ms",
            "<= 2 ms",
            statistics.median(gaps) <= 2.0,
        ),
    ]


async def _step_gaps_ms(orch: Orchestrator, run_id: str) -> list[float]:
    """Time from one step's success to the next step's start, from the ledger."""

    def read(conn: Any) -> list[tuple[str, int]]:
        q = (
            select(ledger_entries.c.entry_type, ledger_entries.c.ts_us)
            .where(ledger_entries.c.run_id == run_id)
            .order_by(ledger_entries.c.seq)
        )
        return [(t, ts) for t, ts in conn.execute(q)]

    rows = await orch.env.db.transact(read)
    gaps, last_done = [], None
    for entry_type, ts in rows:
        if entry_type == "step.succeeded":
            last_done = ts
        elif entry_type == "step.running" and last_done is not None:
            gaps.append((ts - last_done) / 1000)
    return gaps


async def bench_fan_out(orch: Orchestrator, n: int) -> list[Row]:
    """One run of n independent steps: steps per second from create to completion."""
    dag = f"fan{n}"
    await orch.catalog.publish(TENANT, parse_spec(_fan_spec(n)))
    orch.start_worker()
    start = time.perf_counter()
    created = await orch.runs.create(RunRequest(TENANT, dag, {}))
    status = await orch.runs.wait(TENANT, created.run.run_id, poll_seconds=0.05)
    rate = n / (time.perf_counter() - start)
    return [
        Row(
            f"1 run x {n} steps",
            "throughput",
            rate,
            "steps/s",
            ">= 3000",
            status == "completed" and rate >= 3000,
        )
    ]


async def bench_many_runs(orch: Orchestrator, n: int) -> list[Row]:
    """n runs of one step, created while the worker runs: end-to-end steps per second."""
    await orch.catalog.publish(TENANT, parse_spec(_fan_spec(1)))
    orch.start_worker()
    start = time.perf_counter()
    await asyncio.gather(
        *(orch.runs.create(RunRequest(TENANT, "fan1", {"i": i})) for i in range(n))
    )
    create_s = time.perf_counter() - start
    done = await _count_completed(orch)
    rate = n / (time.perf_counter() - start)
    return [
        Row(f"{n} runs x 1 step", "run creation", n / create_s, "runs/s", "(info)", True),
        Row(
            f"{n} runs x 1 step",
            "throughput",
            rate,
            "steps/s",
            ">= 3000",
            done == n and rate >= 3000,
        ),
    ]


async def _count_completed(orch: Orchestrator) -> int:
    """Wait until no run is open; return how many completed."""

    def count(conn: Any) -> tuple[int, int]:
        q = select(runs.c.status, func.count()).group_by(runs.c.status)
        by_status = {s: n for s, n in conn.execute(q)}
        open_runs = by_status.get("queued", 0) + by_status.get("running", 0)
        return open_runs, by_status.get("completed", 0)

    for _ in range(1200):
        open_runs, completed = await orch.env.db.transact(count)
        if open_runs == 0:
            return int(completed)
        await asyncio.sleep(0.02)
    return -1


def _rss_row() -> Row:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Row("whole benchmark process", "peak RSS", peak_mb, "MB", "<= 250", peak_mb <= 250)


def _print(rows: list[Row]) -> None:
    header = (
        f"| {'scenario':<22} | {'measure':<24} | {'value':>10} | {'unit':<7} | "
        f"{'target':<8} | ok  |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r.scenario:<22} | {r.measure:<24} | {r.value:>10.2f} | {r.unit:<7} | "
            f"{r.target:<8} | {'yes' if r.ok else 'NO ':<3} |"
        )


async def main(quick: bool) -> int:
    """Run every scenario and print the table; exit 1 if a target is missed."""
    scale = 10 if quick else 1
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows += await _with_orchestrator(work, 64, lambda o: bench_chain(o, 500 // scale))
        rows += await _with_orchestrator(work, 512, lambda o: bench_fan_out(o, 10_000 // scale))
        rows += await _with_orchestrator(work, 512, lambda o: bench_many_runs(o, 10_000 // scale))
    rows.append(_rss_row())
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one tenth of the sizes")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
