"""End-to-end speed a client sees over the public API: POST /runs, await the run's end.

Usage: .venv/bin/python bench/api_e2e.py [--quick]
Prints a table; never run as a test. Starts `stella orch serve` on a fresh SQLite store (as
bench/api.py does), publishes DAGs over HTTP and times every run from the POST being sent to
its terminal event (run.completed / run.failed / run.cancelled) arriving on the WebSocket run
stream `/api/v1/orchestrator/runs/stream`, which stays connected for the whole benchmark.

Scenarios: a chain of N no-op steps, each templated from the previous step's output
(`${steps.<prev>.outputs.v}`), N = 100 / 1,000 / 10,000 (10,000 only without --quick);
a fan-out of N independent no-op steps and a join, N = 500 / 1,000 / 9,999 (10,000 steps,
the most a spec may have); 50 one-step
runs started and awaited in turn. Per-step cost must not grow with the DAG: the largest
chain (fan-out) is within 15 % of the 100-step chain (500-step fan-out) per step.
The server and this client share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from api import BASE, Row, Server, _print, _ws_url, start_server  # type: ignore[import-not-found]

TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})
# Operator settings of the server under test: a 10,000-step spec is bigger than the default
# 1 MiB body limit, and one client of a 10,000-step run is sent ~30,000 events in seconds.
SERVER_SETTINGS = {
    "STELLA_ORCH_MAX_BODY_BYTES": str(8 * 1024 * 1024),
    "STELLA_ORCH_STREAM_QUEUE_LIMIT": "1000000",
}
RUN_TIMEOUT_SECONDS = 900
SIZE_TOLERANCE = 0.15  # the largest DAG's per-step cost may exceed the smallest's by this


def chain_spec(dag_id: str, n: int) -> dict[str, Any]:
    """N no-op steps in a line, each echoing the previous step's output `v`."""
    ids = [f"s{i}" for i in range(n)]
    first = {"id": ids[0], "plugin": "noop", "params": {"outputs": {"v": 0}}}
    steps: list[dict[str, Any]] = [first]
    for prev, step in itertools.pairwise(ids):
        ref = f"${{steps.{prev}.outputs.v}}"
        steps.append({"id": step, "plugin": "noop", "params": {"outputs": {"v": ref}}})
    edges = [{"from": a, "to": b} for a, b in itertools.pairwise(ids)]
    return {"dagId": dag_id, "version": 1, "steps": steps, "edges": edges}


def fan_spec(dag_id: str, n: int) -> dict[str, Any]:
    """N independent no-op steps and one join that waits for all of them."""
    ids = [f"s{i}" for i in range(n)]
    steps = [{"id": s, "plugin": "noop"} for s in ids] + [{"id": "join", "plugin": "noop"}]
    return {
        "dagId": dag_id,
        "version": 1,
        "steps": steps,
        "edges": [{"from": s, "to": "join"} for s in ids],
    }


class RunWatcher:
    """One WebSocket stream for the tenant; records when each run's terminal event arrives."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._ended: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.ended_at: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.messages = 0
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None

    async def __aenter__(self) -> RunWatcher:
        self._ws = await websockets.connect(_ws_url(self._server), max_size=None, max_queue=None)
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._ws.close()

    async def _listen(self) -> None:
        async for message in self._ws:
            self.messages += 1
            if '"type":"run.' not in message:  # step events: not what we wait for
                continue
            event = json.loads(message)
            if event["type"] in TERMINAL:
                self.ended_at[event["runId"]] = time.perf_counter()
                self.status[event["runId"]] = event["status"]
                self._ended[event["runId"]].set()

    async def wait(self, run_id: str) -> float:
        """The time the run's terminal event arrived."""
        await asyncio.wait_for(self._ended[run_id].wait(), RUN_TIMEOUT_SECONDS)
        return self.ended_at[run_id]


class Client:
    """The benchmark's HTTP client: publish DAGs, start runs, time them to their end."""

    def __init__(self, server: Server, http: httpx.AsyncClient, watcher: RunWatcher) -> None:
        self.server = server
        self.http = http
        self.watcher = watcher

    async def publish(self, spec: dict[str, Any]) -> None:
        """Publish a spec (a big one can take a while to validate)."""
        r = await self.http.post("/dags", json=spec, headers=self.server.headers, timeout=300)
        r.raise_for_status()

    async def run(self, dag_id: str, inputs: dict[str, Any] | None = None) -> float:
        """Seconds from sending POST /runs to the run's terminal event; the run must succeed."""
        sent = time.perf_counter()
        r = await self.http.post(
            "/runs", json={"dagId": dag_id, "inputs": inputs or {}}, headers=self.server.headers
        )
        r.raise_for_status()
        run_id = r.json()["runId"]
        ended = await self.watcher.wait(run_id)
        if self.watcher.status[run_id] != "completed":
            raise RuntimeError(f"run {run_id} of {dag_id} ended {self.watcher.status[run_id]}")
        return ended - sent


async def bench_chain(client: Client, sizes: list[int]) -> list[Row]:
    """ms per step of chains of each size; the largest within 15 % of the smallest."""
    rows, per_step = [], {}
    for n in sizes:
        await client.publish(chain_spec(f"chain{n}", n))
        per_step[n] = await client.run(f"chain{n}") / n * 1000
        rows.append(
            Row(f"chain {n:,}", "time per step", per_step[n], "ms", "<= 1.5", per_step[n] <= 1.5)
        )
    rows.append(_size_row("chain", sizes, per_step))
    return rows


async def bench_fan(client: Client, sizes: list[int]) -> list[Row]:
    """steps/s and ms per step of fan-outs + join; the largest within 15 % of the smallest."""
    rows, per_step = [], {}
    for n in sizes:
        await client.publish(fan_spec(f"fan{n}", n))
        wall = await client.run(f"fan{n}")
        rate = (n + 1) / wall
        per_step[n] = wall / (n + 1) * 1000
        name = f"fan-out {n:,} + join"
        rows.append(Row(name, "steps per second", rate, "steps/s", ">= 4000", rate >= 4000))
        rows.append(Row(name, "time per step", per_step[n], "ms", "(info)", True))
    rows.append(_size_row("fan-out", sizes, per_step))
    return rows


def _size_row(kind: str, sizes: list[int], per_step: dict[int, float]) -> Row:
    small, large = min(sizes), max(sizes)
    ratio = per_step[large] / per_step[small]
    return Row(
        f"{kind} {large:,} vs {small:,}",
        "per-step cost ratio",
        ratio,
        "x",
        f"<= {1 + SIZE_TOLERANCE:.2f}",
        ratio <= 1 + SIZE_TOLERANCE,
    )


async def bench_sequential(client: Client, count: int) -> list[Row]:
    """`count` one-step runs, each started and awaited before the next."""
    one = {"dagId": "one", "version": 1, "steps": [{"id": "only", "plugin": "noop"}]}
    await client.publish(one)
    await client.run("one", {"warm": True})
    walls = [await client.run("one", {"i": i}) for i in range(count)]
    rate = count / sum(walls)
    median = sorted(walls)[len(walls) // 2] * 1000
    name = f"{count} one-step runs in turn"
    return [
        Row(name, "runs per second", rate, "runs/s", ">= 700", rate >= 700),
        Row(name, "median POST → end", median, "ms", "(info)", True),
    ]


async def main(args: argparse.Namespace) -> int:
    """Run every scenario against one server and print the table."""
    chains = [100, 1000] if args.quick else [100, 1000, 10_000]
    fans = [500, 1000] if args.quick else [500, 1000, 9_999]  # + join: 10,000, the most a spec has
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), SERVER_SETTINGS)
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}{BASE}") as http,
                RunWatcher(server) as watcher,
            ):
                client = Client(server, http, watcher)
                rows += await bench_sequential(client, 50)
                rows += await bench_chain(client, chains)
                rows += await bench_fan(client, fans)
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=30)
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="without the 10,000-step DAGs")
    sys.exit(asyncio.run(main(parser.parse_args())))
