"""Engine benchmarks: chain overhead, fan-out, many runs, RSS; on SQLite or PostgreSQL.

Usage: .venv/bin/python bench/run.py [--quick] [--store sqlite|postgresql]
Prints a table; never run as a test. Each scenario uses a fresh database file (SQLite) or a
fresh database on the server in STELLA_TEST_PG_URL (PostgreSQL; without it, the benchmark
re-runs itself under `scripts/pg.sh run`, a throwaway cluster on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.requests import RunRequest
from stellaorch.settings import Settings
from stellaorch.store.database import make_engine
from stellaorch.store.schema import ledger_entries, runs

TENANT = "bench"
PG_URL_ENV = "STELLA_TEST_PG_URL"


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


@contextmanager
def _fresh_store(store: str, workdir: Path) -> Iterator[str]:
    """The URL of a new, empty store of the chosen kind; dropped afterwards."""
    if store == "sqlite":
        yield f"sqlite:///{workdir}/bench-{time.monotonic_ns()}.db"
        return
    server = os.environ[PG_URL_ENV]
    name = f"stella_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def _with_orchestrator(
    store: str,
    workdir: Path,
    concurrency: int,
    body: Callable[[Orchestrator], Awaitable[list[Row]]],
) -> list[Row]:
    with _fresh_store(store, workdir) as url:
        orch = Orchestrator.open(Settings(database_url=url, worker_concurrency=concurrency))
        try:
            return await body(orch)
        finally:
            await orch.close()


def _chain_target_ms(orch: Orchestrator) -> float:
    """SQLite in-process: 2 ms per step; PostgreSQL over loopback: 5 ms (issue 5)."""
    return 5.0 if orch.env.db.dialect == "postgresql" else 2.0


async def bench_chain(orch: Orchestrator, n: int) -> list[Row]:
    """Sequential chain: wall time per step, and the median start-to-start cycle per step."""
    await orch.catalog.publish(TENANT, parse_spec(_chain_spec(n)))
    orch.start_worker()
    start = time.perf_counter()
    created = await orch.runs.create(RunRequest(TENANT, "chain", {}))
    status = await orch.runs.wait(TENANT, created.run.run_id)
    wall = time.perf_counter() - start
    gaps = await _step_gaps_ms(orch, created.run.run_id)
    per_step = wall / n * 1000
    limit = _chain_target_ms(orch)
    return [
        Row(
            f"chain of {n}",
            "wall time per step",
            per_step,
            "ms",
            f"<= {limit:g} ms",
            status == "completed" and per_step <= limit,
        ),
        Row(
            f"chain of {n}",
            "median per-step cycle",
            statistics.median(gaps),
            "ms",
            f"<= {limit:g} ms",
            statistics.median(gaps) <= limit,
        ),
    ]


async def _step_gaps_ms(orch: Orchestrator, run_id: str) -> list[float]:
    """Per-step cycle of a chain: one step's start to the next step's start, from the ledger.

    For no-op steps this is the whole per-step overhead: leasing, running, reporting and
    queueing the successor. (Success and the next start share one transaction and one
    timestamp, so the success-to-start gap alone would say nothing.)
    """

    def read(conn: Any) -> list[int]:
        q = (
            select(ledger_entries.c.ts_us)
            .where(ledger_entries.c.run_id == run_id, ledger_entries.c.entry_type == "step.running")
            .order_by(ledger_entries.c.seq)
        )
        return [int(ts) for (ts,) in conn.execute(q)]

    starts = await orch.env.db.transact(read)
    return [(b - a) / 1000 for a, b in itertools.pairwise(starts)]


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


async def _count_completed(orch: Orchestrator, timeout_s: float = 24.0) -> int:
    """Wait until no run is open; return how many completed (-1 after `timeout_s`)."""

    def count(conn: Any) -> tuple[int, int]:
        q = select(runs.c.status, func.count()).group_by(runs.c.status)
        by_status = {s: n for s, n in conn.execute(q)}
        open_runs = by_status.get("queued", 0) + by_status.get("running", 0)
        return open_runs, by_status.get("completed", 0)

    for _ in range(max(1, round(timeout_s / 0.02))):
        open_runs, completed = await orch.env.db.transact(count)
        if open_runs == 0:
            return int(completed)
        await asyncio.sleep(0.02)
    return -1


def _rss_row() -> Row:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Row("whole benchmark process", "peak RSS", peak_mb, "MB", "<= 250", peak_mb <= 250)


def _print(rows: list[Row]) -> None:
    """Print the results table (scenario | measure | value | unit | target | ok)."""
    _table(
        ["scenario", "measure", "value", "unit", "target", "ok"],
        [
            [r.scenario, r.measure, f"{r.value:.2f}", r.unit, r.target, "yes" if r.ok else "NO"]
            for r in rows
        ],
        right={2},
    )


def _table(header: list[str], cells: list[list[str]], right: set[int] | None = None) -> None:
    """Print a Markdown table whose columns fit their widest cell; `right`: right-aligned."""
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]
    aligned = right or set()

    def line(row: list[str]) -> str:
        padded = (
            c.rjust(w) if i in aligned else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print(line(row))


async def main(quick: bool, store: str) -> int:
    """Run every scenario and print the table; exit 1 if a target is missed."""
    scale = 10 if quick else 1
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        async def scenario(
            slots: int, body: Callable[[Orchestrator], Awaitable[list[Row]]]
        ) -> None:
            rows.extend(await _with_orchestrator(store, work, slots, body))

        await scenario(64, lambda o: bench_chain(o, 500 // scale))
        await scenario(512, lambda o: bench_fan_out(o, 10_000 // scale))
        await scenario(512, lambda o: bench_many_runs(o, 10_000 // scale))
    rows.append(_rss_row())
    print(f"store: {store}")
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


def _under_throwaway_cluster() -> None:
    """Re-run this command with STELLA_TEST_PG_URL set by `scripts/pg.sh run`."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "pg.sh"
    os.execvp("bash", ["bash", str(script), "run", sys.executable, *sys.argv])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one tenth of the sizes")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if args.store == "postgresql" and not os.environ.get(PG_URL_ENV):
        _under_throwaway_cluster()
    sys.exit(asyncio.run(main(args.quick, args.store)))
