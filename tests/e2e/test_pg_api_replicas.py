"""Two `stella orch api` replicas (and one `stella orch worker`) on one PostgreSQL store.

The replicas meet only in the database. Two things are proven against the real processes:

- A runToken sent to both replicas at the same moment creates one run: one answer is 201, the
  other 200 with the same runId, and the store holds one run (and one `run.created`) per token.
- LISTEN/NOTIFY fans run events out to every replica's WebSocket streams: a client on one
  replica sees, in order and up to `run.completed`, the events of a run started on the other.
  The replicas poll only every 30 s, so anything seen within seconds was woken by a NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from services import Service, api_token, count, service
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.settings import Settings

TENANT = "acme"
DAG_ID = "chain"
BASE = "/api/v1/orchestrator"
TOKENS = 50  # per round: one round of pairs, one burst of every request at once
RUNS = 4  # streamed runs, started alternately on each replica
REPLICA_POLL_SECONDS = "30"  # far beyond the assertions' patience: only a NOTIFY is in time
MAX_LAG_SECONDS = 3.0
SPEC = {
    "dagId": DAG_ID,
    "version": 1,
    "steps": [{"id": s, "plugin": "noop"} for s in "abc"],
    "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
}


def expected_events() -> list[tuple[str, str, str | None]]:
    """The (type, status, stepId) sequence of one run of the a -> b -> c chain."""
    events: list[tuple[str, str, str | None]] = [
        ("run.updated", "queued", None),
        ("step.updated", "queued", "a"),
        ("run.started", "running", None),
        ("step.updated", "running", "a"),
        ("step.updated", "succeeded", "a"),
    ]
    for step in "bc":
        events += [
            ("step.updated", "queued", step),
            ("step.updated", "running", step),
            ("step.updated", "succeeded", step),
        ]
    return [*events, ("run.completed", "completed", None)]


@dataclass
class Replicas:
    """Two API processes on one store, and the headers of a writing and a reading caller."""

    apis: tuple[Service, Service]
    write: dict[str, str]
    read: dict[str, str]

    def stream_url(self, api: Service) -> str:
        """The run-event WebSocket of one replica, narrowed to the test DAG."""
        return f"ws{api.url.removeprefix('http')}{BASE}/runs/stream?dagId={DAG_ID}"


@asynccontextmanager
async def replicas(url: str, tmp_path: Path, *, worker: bool) -> AsyncIterator[Replicas]:
    """Two `stella orch api` processes sharing one signing key (and a worker if asked)."""
    keys = tmp_path / "keys"
    # The key exists before the replicas start, so neither generates its own.
    write = api_token(keys, TENANT, ["orchestrator:write"])
    read = api_token(keys, TENANT, ["orchestrator:read"])
    api_env = {
        "STELLA_ORCH_KEYS_DIR": str(keys),
        "STELLA_ORCH_DEFAULT_TENANT": TENANT,
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": REPLICA_POLL_SECONDS,
    }
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(service("api", url, tmp_path / "api1.log", api_env))
        two = await stack.enter_async_context(service("api", url, tmp_path / "api2.log", api_env))
        if worker:
            worker_env = {
                "STELLA_ORCH_DEFAULT_TENANT": TENANT,
                "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.2",
            }
            await stack.enter_async_context(
                service("worker", url, tmp_path / "worker.log", worker_env)
            )
        yield Replicas((one, two), headers(write), headers(read))


def headers(token: str) -> dict[str, str]:
    """Bearer token and tenant headers for the test tenant."""
    return {"Authorization": f"Bearer {token}", "X-Stella-Tenant": TENANT}


@asynccontextmanager
async def published_store(url: str) -> AsyncIterator[Orchestrator]:
    """An in-process Orchestrator (no worker) on the migrated store, with SPEC published."""
    orch = Orchestrator.open(Settings(database_url=url))
    try:
        await orch.catalog.publish(TENANT, parse_spec(SPEC))
        yield orch
    finally:
        await orch.close()


async def rows(orch: Orchestrator, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Every row of a SQL query, in its own read transaction."""
    return await orch.env.db.read(lambda c: [tuple(r) for r in c.execute(text(statement), params)])


# -- one runToken, two replicas -----------------------------------------------------------
async def test_one_run_token_raced_on_two_replicas_creates_one_run(
    pg_store_url: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_store_url()
    async with (
        published_store(url) as orch,
        replicas(url, tmp_path, worker=False) as cluster,
        httpx.AsyncClient(headers=cluster.write, timeout=30) as http,
    ):

        async def start(api: Service, token: str, i: int) -> httpx.Response:
            body = {"dagId": DAG_ID, "inputs": {"i": i}, "runToken": token}
            return await http.post(f"{api.url}{BASE}/runs", json=body)

        async def race(token: str, i: int) -> list[httpx.Response]:
            return list(await asyncio.gather(*(start(api, token, i) for api in cluster.apis)))

        began = time.monotonic()
        # Round 1: each token's two requests leave together; one token after the other.
        answers = {f"pair-{i}": await race(f"pair-{i}", i) for i in range(TOKENS)}
        paired_s = time.monotonic() - began
        # Round 2: every token's two requests at once, so each replica commits them in batches.
        burst = [f"burst-{i}" for i in range(TOKENS)]
        began = time.monotonic()
        raced = await asyncio.gather(*map(race, burst, range(TOKENS)))
        answers |= dict(zip(burst, raced, strict=True))
        burst_s = time.monotonic() - began

        run_of = {token: check_pair(token, pair) for token, pair in answers.items()}
        created_by = [[r.status_code for r in pair].index(201) for pair in answers.values()]
        retries = sum(api.output().count("store.conflict_retry") for api in cluster.apis)

        stored = dict(await rows(orch, "SELECT run_token, run_id FROM runs"))
        assert await count(orch, "SELECT COUNT(*) FROM runs") == len(stored) == 2 * TOKENS
        assert stored == run_of
        created_entries = "SELECT COUNT(*) FROM ledger_entries WHERE entry_type = 'run.created'"
        assert await count(orch, created_entries) == 2 * TOKENS
    print(
        f"\nrunToken race: {2 * TOKENS} tokens x 2 replicas -> {len(stored)} runs; "
        f"replica 1 created {created_by.count(0)}, replica 2 {created_by.count(1)}; "
        f"{retries} unique-key conflict retries; pairs {paired_s:.2f}s, burst {burst_s:.2f}s"
    )


def check_pair(token: str, pair: list[httpx.Response]) -> str:
    """Both answers succeed, exactly one created the run, both name it; returns its runId."""
    statuses = sorted(r.status_code for r in pair)
    assert statuses == [200, 201], (token, [(r.status_code, r.text) for r in pair])
    bodies = [r.json() for r in pair]
    run_ids = {b["runId"] for b in bodies}
    assert len(run_ids) == 1, (token, bodies)
    assert all(b["runToken"] == token and b["dagId"] == DAG_ID for b in bodies), bodies
    return str(run_ids.pop())


# -- events across replicas ---------------------------------------------------------------
@dataclass
class Received:
    """The events one client got, each with the wall-clock time it arrived."""

    events: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)

    def lags(self) -> list[float]:
        """Seconds from each event's ledger timestamp to its arrival at the client."""
        return [
            at - datetime.fromisoformat(e["timestamp"]).timestamp()
            for e, at in zip(self.events, self.arrived, strict=True)
        ]


async def collect(ws: ClientConnection, run_ids: set[str], within: float) -> Received:
    """Events from `ws` until every run in `run_ids` has completed (or failed, or cancelled)."""
    got, open_runs = Received(), set(run_ids)
    try:
        async with asyncio.timeout(within):
            while open_runs:
                event = json.loads(await ws.recv())
                got.events.append(event)
                got.arrived.append(time.time())
                if event["type"] in ("run.completed", "run.failed", "run.cancelled"):
                    open_runs.discard(event["runId"])
    except TimeoutError:
        raise AssertionError(
            f"{len(open_runs)} run(s) not seen to the end within {within}s "
            f"({len(got.events)} events received)"
        ) from None
    return got


async def test_streams_on_each_replica_see_runs_started_on_the_other(
    pg_store_url: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_store_url()
    async with (
        published_store(url) as orch,
        replicas(url, tmp_path, worker=True) as cluster,
        httpx.AsyncClient(timeout=30) as http,
    ):
        one, two = cluster.apis
        async with (
            connect(cluster.stream_url(one), additional_headers=cluster.read) as ws1,
            connect(cluster.stream_url(two), additional_headers=cluster.read) as ws2,
        ):
            # Replica 2 starts the first run (and every other one), replica 1 the rest.
            starters = [two if i % 2 == 0 else one for i in range(RUNS)]
            began = time.monotonic()
            started = [
                await http.post(
                    f"{api.url}{BASE}/runs",
                    json={"dagId": DAG_ID, "inputs": {"i": i}},
                    headers=cluster.write,
                )
                for i, api in enumerate(starters)
            ]
            assert [r.status_code for r in started] == [201] * RUNS, [r.text for r in started]
            run_ids = [r.json()["runId"] for r in started]
            # Each run reads back on the replica that did not create it, while it may still run.
            for run_id, api in zip(run_ids, starters, strict=True):
                other = one if api is two else two
                view = await http.get(f"{other.url}{BASE}/runs/{run_id}", headers=cluster.read)
                assert view.status_code == 200, view.text
                assert view.json()["runId"] == run_id
            seen1, seen2 = await asyncio.gather(
                collect(ws1, set(run_ids), 10), collect(ws2, set(run_ids), 10)
            )
            elapsed = time.monotonic() - began

        ledger = [r[0] for r in await rows(orch, "SELECT id FROM ledger_entries ORDER BY id")]
        for seen in (seen1, seen2):
            check_stream(seen, run_ids, ledger)
        for run_id in run_ids[::2]:  # created on replica 2, read on replica 1
            view = await http.get(f"{one.url}{BASE}/runs/{run_id}", headers=cluster.read)
            assert view.status_code == 200, view.text
            run = view.json()
            assert (run["runId"], run["status"]) == (run_id, "completed"), run
            assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3, run
    lags = seen1.lags() + seen2.lags()
    print(
        f"\ncross-replica stream: {RUNS} runs, {len(seen1.events)} events on each replica, "
        f"all completed and seen in {elapsed:.2f}s; event lag median "
        f"{statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms "
        f"(replica poll {REPLICA_POLL_SECONDS}s)"
    )


def check_stream(seen: Received, run_ids: list[str], ledger: list[int]) -> None:
    """The client saw every ledger entry once, in order, each run in full, all promptly."""
    seqs = [e["seq"] for e in seen.events]
    assert seqs == ledger, "the stream must be the ledger: no gap, duplicate or reordering"
    for run_id in run_ids:
        of_run = [e for e in seen.events if e["runId"] == run_id]
        assert [(e["type"], e["status"], e.get("stepId")) for e in of_run] == expected_events()
        assert {(e["tenant"], e["dagId"]) for e in of_run} == {(TENANT, DAG_ID)}
    late = [lag for lag in seen.lags() if lag > MAX_LAG_SECONDS]
    assert not late, f"{len(late)} events arrived more than {MAX_LAG_SECONDS}s after commit"
