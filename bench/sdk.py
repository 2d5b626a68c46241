"""One SDK worker against `stella orch serve` on SQLite: chain, burst, queued -> handler latency.

Usage: .venv/bin/python bench/sdk.py [--quick] [--chain 100] [--burst 500] [--concurrency 64]
Prints a table; never run as a test (tests/e2e/test_bench_sdk_console.py runs it at its
smallest). Starts `serve` (API and engine worker in one process, as queue steps need, see
docs/workers.md) on a fresh SQLite file; the SDK worker runs in this process. Both share the
machine's cores. Scenarios:
- chain: one run of N queue steps, each depending on the previous; ms per step is the wall
  time from POST /runs to the run seen completed (polled every 5 ms), divided by N.
- burst: one run of M independent queue steps; steps/s over the same wall time.
- latency: per step of the chain run (one step at a time, so no queueing behind others), the
  handler's entry time (time.time() in the handler) minus the step's `step.queued` ledger
  timestamp (read from the SQLite file, as the API's timestamps stop at ms; both are wall
  clock on this machine); p50 and p99.
Targets (issue 14): <= 3 ms per chained step, >= 3,000 steps/s, latency p50 <= 2 ms, p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from api import BASE, TENANT, Row, Server, _print, start_server  # type: ignore[import-not-found]

from stellaorch.sdk import TaskContext, Worker, task

CHAIN_TARGET_MS = 3.0
BURST_TARGET = 3000.0
P50_TARGET_MS, P99_TARGET_MS = 2.0, 10.0

entered_us: dict[tuple[str, str], int] = {}


@task("bench-echo")
async def echo(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Record when the handler was entered; return at once."""
    entered_us[(ctx.run_id, ctx.step_id)] = time.time_ns() // 1000
    return {"ok": True}


def _dag(dag_id: str, n: int, chained: bool) -> dict[str, Any]:
    steps = [{"id": f"s{i}", "plugin": "queue", "with": {"task": "bench-echo"}} for i in range(n)]
    edges = [{"from": f"s{i}", "to": f"s{i + 1}"} for i in range(n - 1)] if chained else []
    return {"dagId": dag_id, "version": 1, "steps": steps, "edges": edges}


async def _timed_run(
    http: httpx.AsyncClient, dag: dict[str, Any], within: float
) -> tuple[str, float]:
    """Publish `dag`, start a run, poll until it completes; (run id, seconds taken)."""
    (await http.post("/dags", json=dag)).raise_for_status()
    started = time.perf_counter()
    created = await http.post("/runs", json={"dagId": dag["dagId"]})
    created.raise_for_status()
    run_id = str(created.json()["runId"])
    while time.perf_counter() - started < within:
        status = (await http.get(f"/runs/{run_id}")).json()["status"]
        if status == "completed":
            return run_id, time.perf_counter() - started
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"run {run_id} ended {status}")
        await asyncio.sleep(0.005)
    raise RuntimeError(f"run {run_id} did not complete within {within:g} s")


def _queued_us(db: Path, run_id: str) -> dict[str, int]:
    """Each step's `step.queued` ledger timestamp in µs (the API's timestamps stop at ms)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT step_id, MIN(ts_us) FROM ledger_entries"
            " WHERE run_id = ? AND entry_type = 'step.queued' GROUP BY step_id",
            (run_id,),
        ).fetchall()
    return {str(step): int(ts) for step, ts in rows}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _scenarios(server: Server, db: Path, args: argparse.Namespace) -> list[Row]:
    base = f"http://127.0.0.1:{server.port}{BASE}"
    async with httpx.AsyncClient(base_url=base, headers=server.headers, timeout=30) as http:
        await _timed_run(http, _dag("warm", 5, chained=True), 60)  # imports, caches, first claim
        chain_id, chain_s = await _timed_run(http, _dag("chain", args.chain, True), 600)
        _, burst_s = await _timed_run(http, _dag("burst", args.burst, False), 600)
    queued = _queued_us(db, chain_id)
    waits = [(entered_us[(chain_id, s)] - t) / 1000 for s, t in queued.items()]
    if len(waits) != args.chain:
        raise RuntimeError(f"latency measured for {len(waits)} of {args.chain} steps")
    per_step = chain_s * 1000 / args.chain
    rate = args.burst / burst_s
    p50, p99 = _pct(waits, 0.5), _pct(waits, 0.99)
    return [
        Row(f"chain of {args.chain}", "per step", per_step, "ms", "<= 3", per_step <= 3.0),
        Row(f"burst of {args.burst}", "throughput", rate, "steps/s", ">= 3000", rate >= 3000),
        Row("queued -> handler (chain)", "p50", p50, "ms", "<= 2", p50 <= P50_TARGET_MS),
        Row("queued -> handler (chain)", "p99", p99, "ms", "<= 10", p99 <= P99_TARGET_MS),
    ]


async def main(args: argparse.Namespace) -> int:
    """Start serve and one SDK worker, run the scenarios, print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        worker = Worker(
            [echo],
            url=f"http://127.0.0.1:{server.port}",
            token=server.token,
            tenant=TENANT,
            concurrency=args.concurrency,
            wait_seconds=1.0,  # a stop waits for the open claim at most this long
        )
        job = asyncio.create_task(worker.serve())
        try:
            rows = await _scenarios(server, Path(tmp) / "bench.db", args)
        finally:
            worker.stop()
            await asyncio.wait_for(job, 30)
            server.proc.terminate()
            server.proc.wait(timeout=30)
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="chain 20, burst 50")
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parsed = parser.parse_args()
    if min(parsed.chain, parsed.burst, parsed.concurrency) < 1:
        parser.error("--chain, --burst and --concurrency must be >= 1")
    if parsed.quick:
        parsed.chain, parsed.burst = min(parsed.chain, 20), min(parsed.burst, 50)
    sys.exit(asyncio.run(main(parsed)))
