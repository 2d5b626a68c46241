"""HTTP API benchmarks against a real `stella orch serve` on SQLite, load from this process.

Usage: .venv/bin/python bench/api.py [--quick] [--clients 1000] [--burst 1000]
Prints a table; never run as a test. The server and this generator share the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets
from loadgen import Result, closed_loop, open_loop, request_bytes  # type: ignore[import-not-found]

from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token

BASE = "/api/v1/orchestrator"
TENANT = "bench"
EVENTS_PER_RUN = 6  # run.updated, run.started, step.updated x3, run.completed


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measure: str
    value: float
    unit: str
    target: str
    ok: bool


@dataclass
class Server:
    """A running `stella orch serve` and how to reach it."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Auth and tenant headers for every request."""
        return {
            "Authorization": f"Bearer {self.token}",
            "X-Stella-Tenant": TENANT,
            "X-Stella-Operator-Reason": "benchmark",
        }

    def rss_peak_mb(self) -> float:
        """The server's peak resident memory so far."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, settings: dict[str, str] | None = None) -> Server:
    """Start serve on a fresh SQLite file with a fresh key; wait until it answers.

    `settings` are extra STELLA_ORCH_* variables for the server (operator settings only).
    """
    keys = workdir / "keys"
    generate_key(keys)
    token = issue_token(
        keys,
        subject="bench",
        tenants=[TENANT],
        audience="stella-orchestrator",
        scopes=["orchestrator:admin"],
        ttl_seconds=3600,
    )
    port = _free_port()
    env = {
        **os.environ,
        "STELLA_ORCH_KEYS_DIR": str(keys),
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{workdir}/bench.db",
        # The benchmarks publish unsigned DAGs over HTTP: they time the engine, not signing.
        "STELLA_ORCH_REQUIRE_DAG_SIGNATURES": "false",
        **(settings or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "stellaorch.cli.main",
        "orch",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(proc, port, token)
    for _ in range(200):
        try:
            httpx.get(
                f"http://127.0.0.1:{port}{BASE}/admin/health", headers=server.headers, timeout=1
            )
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError("serve did not start")


def publish(server: Server, dag_id: str = "bench") -> None:
    """A one-step no-op DAG, the unit of every scenario."""
    spec = {"dagId": dag_id, "version": 1, "steps": [{"id": "only", "plugin": "noop"}]}
    r = httpx.post(
        f"http://127.0.0.1:{server.port}{BASE}/dags", json=spec, headers=server.headers, timeout=10
    )
    r.raise_for_status()


async def drain(server: Server) -> None:
    """Wait until the worker has finished the backlog, so phases don't measure each other."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}{BASE}") as client:
        for _ in range(600):
            health = (await client.get("/admin/health", headers=server.headers)).json()
            if all(q["depth"] == 0 and q["inFlight"] == 0 for q in health["queues"]):
                return
            await asyncio.sleep(0.1)


def _post_run(server: Server) -> Any:
    headers = dict(server.headers)
    return lambda i: request_bytes(
        "POST", f"{BASE}/runs", headers, {"dagId": "bench", "inputs": {"i": i}}
    )


async def bench_post(server: Server, rate: float, seconds: float) -> tuple[list[Row], str]:
    """Open-loop POST /runs at `rate` for `seconds`."""
    res = await open_loop("127.0.0.1", server.port, _post_run(server), rate, seconds, 64)
    ok = sum(n for s, n in res.statuses.items() if s < 300)
    run_id = json.loads(res.bodies[-1])["runId"]
    achieved = ok / res.elapsed
    return [
        Row(
            "POST /runs",
            f"sustained at {rate:.0f}/s",
            achieved,
            "runs/s",
            ">= 800",
            achieved >= 800 * 0.98 and ok == len(res.latencies),
        ),
        Row("POST /runs", "p99 latency", res.pct(99), "ms", "<= 50", res.pct(99) <= 50),
    ], run_id


async def bench_get(server: Server, run_id: str, seconds: float) -> list[Row]:
    """Closed-loop GET /runs/{id} with 32 connections."""
    path = f"{BASE}/runs/{run_id}"
    raw = request_bytes("GET", path, dict(server.headers))
    res: Result = await closed_loop("127.0.0.1", server.port, lambda i: raw, 32, seconds)
    good = res.statuses.get(200, 0) == len(res.latencies)
    return [
        Row(
            "GET /runs/{id}",
            "throughput",
            res.rate(),
            "req/s",
            ">= 2500",
            good and res.rate() >= 2500,
        )
    ]


def _ws_url(server: Server, query: str = "") -> str:
    return (
        f"ws://127.0.0.1:{server.port}{BASE}/runs/stream?tenant={TENANT}"
        f"&access_token={server.token}{query}"
    )


async def bench_first_event(server: Server, samples: int) -> list[Row]:
    """Time from POST /runs returning to the first step.updated event of that run."""
    first: dict[str, float] = {}
    async with (
        websockets.connect(_ws_url(server), max_size=None) as ws,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}{BASE}") as client,
    ):

        async def listen() -> None:
            async for message in ws:
                event = json.loads(message)
                if event.get("type") == "step.updated":
                    first.setdefault(event["runId"], time.perf_counter())

        listener = asyncio.create_task(listen())
        gaps = []
        for i in range(samples):
            r = await client.post(
                "/runs", json={"dagId": "bench", "inputs": {"l": i}}, headers=server.headers
            )
            returned = time.perf_counter()
            run_id = r.json()["runId"]
            for _ in range(2000):
                if run_id in first:
                    break
                await asyncio.sleep(0.0005)
            gaps.append(max(0.0, first.get(run_id, float("inf")) - returned) * 1000)
        listener.cancel()
    gaps.sort()
    p50, p99 = statistics.median(gaps), gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]
    return [
        Row("POST → first step.updated", "p50", p50, "ms", "<= 10", p50 <= 10),
        Row("POST → first step.updated", "p99", p99, "ms", "<= 50", p99 <= 50),
    ]


async def bench_fanout(server: Server, clients: int, burst: int) -> list[Row]:
    """`clients` streams each receive every event of a `burst` of runs; server RSS bounded."""
    publish(server, "burst")
    counts = [0] * clients
    conns = []
    for _ in range(clients):
        conns.append(
            await websockets.connect(_ws_url(server, "&dagId=burst"), max_size=None, max_queue=None)
        )

    async def consume(i: int, ws: Any) -> None:
        async for message in ws:
            if json.loads(message).get("dagId") == "burst":
                counts[i] += 1
                if counts[i] >= burst * EVENTS_PER_RUN:
                    return

    consumers = [asyncio.create_task(consume(i, ws)) for i, ws in enumerate(conns)]
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.port}{BASE}", limits=httpx.Limits(max_connections=16)
    ) as client:

        async def one(i: int) -> None:
            sent = time.perf_counter()
            r = await client.post(
                "/runs", json={"dagId": "burst", "inputs": {"b": i}}, headers=server.headers
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - sent)

        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(burst)))
    await asyncio.wait(consumers, timeout=600)
    elapsed = time.perf_counter() - start
    for ws in conns:
        await ws.close()
    complete = sum(1 for c in counts if c >= burst * EVENTS_PER_RUN)
    rss = server.rss_peak_mb()
    delivered = sum(counts) / elapsed
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
    return [
        Row(
            f"{clients} streams x {burst} runs",
            "clients with every event",
            complete,
            "clients",
            f"= {clients}",
            complete == clients,
        ),
        Row(f"{clients} streams x {burst} runs", "delivery time", elapsed, "s", "(info)", True),
        Row(
            f"{clients} streams x {burst} runs",
            "messages delivered",
            delivered,
            "msg/s",
            ">= 1e5",
            delivered >= 100_000,
        ),
        Row(
            f"{clients} streams x {burst} runs",
            "POST p99 in the burst",
            p99,
            "ms",
            "<= 100",
            p99 <= 100,
        ),
        Row(
            f"{clients} streams x {burst} runs", "server peak RSS", rss, "MB", "<= 400", rss <= 400
        ),
    ]


def _print(rows: list[Row]) -> None:
    print(
        f"| {'scenario':<28} | {'measure':<26} | {'value':>10} | {'unit':<7} | "
        f"{'target':<8} | ok  |"
    )
    print(f"|{'-' * 30}|{'-' * 28}|{'-' * 12}|{'-' * 9}|{'-' * 10}|-----|")
    for r in rows:
        print(
            f"| {r.scenario:<28} | {r.measure:<26} | {r.value:>10.2f} | {r.unit:<7} | "
            f"{r.target:<8} | {'yes' if r.ok else 'NO ':<3} |"
        )


async def main(args: argparse.Namespace) -> int:
    """Run every scenario against one server and print the table."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            publish(server)
            post_rows, run_id = await bench_post(server, 800, 3 if args.quick else 10)
            rows += post_rows
            await drain(server)
            rows += await bench_get(server, run_id, 2 if args.quick else 5)
            rows += await bench_first_event(server, 50 if args.quick else 300)
            rows += await bench_fanout(server, args.clients, args.burst)
        finally:
            server.proc.terminate()
            server.proc.wait(timeout=30)
    _print(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=1000)
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(asyncio.run(main(parser.parse_args())))
