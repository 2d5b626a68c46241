"""PostgreSQL restarts under load: the services answer 503, then recover by themselves.

The test runs its own cluster (the session's shared one must never be restarted) and real
`stella orch` processes on it: one API, two workers and a scheduler. Clients keep creating
runs over HTTP, each with its own runToken. Mid-load the server is stopped (fast shutdown)
for a few seconds: meanwhile the API answers 503 with the error envelope and no process
exits. After the server is back, every create that got a 503 is sent again with the same
runToken until accepted. In the end every process is the one started, every run completed,
each step succeeded exactly once, every ledger chain verifies and there is exactly one run
per runToken: nothing lost, nothing doubled, nothing stuck.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import Service, api_token, count, service, until_true
from sqlalchemy import text

import pg_cluster
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.settings import Settings

TENANT = "acme"
DAG_ID = "diamond"
BASE = "/api/v1/orchestrator"
CLIENTS = 4  # concurrent HTTP clients creating runs
OUTAGE_SECONDS = 3.0  # longer than the lease TTL: leases held at the stop expire meanwhile
SCHEDULER_TTL_SECONDS = 2
SPEC: dict[str, Any] = {
    "dagId": DAG_ID,
    "version": 1,
    "steps": [{"id": s, "plugin": "sleep", "with": {"seconds": 0.05}} for s in "abcd"],
    "edges": [{"from": a, "to": b} for a, b in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))],
}
# Steps that are still running when PostgreSQL is back, with leases that expired meanwhile.
SLOW_DAG_ID = "slow"
SLOW_SPEC: dict[str, Any] = {
    "dagId": SLOW_DAG_ID,
    "version": 1,
    "steps": [{"id": "long", "plugin": "sleep", "with": {"seconds": OUTAGE_SECONDS + 1.5}}],
    "edges": [],
}
SLOW_TOKENS = ("slow-1", "slow-2")
SERVICE_ENV = {
    "STELLA_ORCH_DEFAULT_TENANT": TENANT,
    "STELLA_ORCH_LEASE_TTL_SECONDS": "1",
    "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.2",
    "STELLA_ORCH_DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
    "STELLA_ORCH_SCHEDULER_LEASE_TTL_SECONDS": str(SCHEDULER_TTL_SECONDS),
    "STELLA_ORCH_SCHEDULER_POLL_SECONDS": "0.5",
}
UNFINISHED = "SELECT COUNT(*) FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')"
ENVELOPE_CODE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


@pytest.fixture
def cluster() -> Iterator[pg_cluster.LocalCluster]:
    """A cluster of this test's own, which it may stop and start (skips without binaries)."""
    bindir = pg_cluster._bindir()
    reason = "no PostgreSQL binaries (install the postgresql package)"
    if bindir is not None:
        own = pg_cluster.LocalCluster(bindir)
        try:
            own.start()
        except pg_cluster.Unavailable as exc:
            own.stop()  # a failed initdb leaves its directory behind
            reason = str(exc)
        else:
            try:
                yield own
            finally:
                own.stop()
            return
    if os.environ.get(pg_cluster.REQUIRED_ENV):
        pytest.fail(f"PostgreSQL is required here: {reason}")
    print(f"skipped: {reason}")
    pytest.skip(f"PostgreSQL restart test skipped: {reason}")


def check_envelope(response: httpx.Response, status: int, code: str) -> None:
    """The response has `status` and the body `{"error": {code, message, traceId}}`."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, f"not an error envelope: {body}"
    error = body["error"]
    assert error.get("code") == code and ENVELOPE_CODE.match(error["code"]), error
    assert isinstance(error.get("message"), str) and error["message"], error
    assert re.fullmatch(r"[0-9a-f]{32}", str(error.get("traceId"))), error


@dataclass
class Load:
    """Clients creating runs over HTTP; a create refused with 503 is resent with its token."""

    client: httpx.AsyncClient
    accepted: dict[str, str] = field(default_factory=dict)  # runToken -> runId
    accepted_at: dict[str, float] = field(default_factory=dict)  # runToken -> monotonic time
    submitted: set[str] = field(default_factory=set)
    refusals: int = 0  # 503s with the envelope
    unexpected: list[str] = field(default_factory=list)  # anything else: must stay empty
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _next: int = field(default=0, init=False)

    async def create(self, token: str, dag_id: str = DAG_ID) -> bool:
        """POST /runs once with `token`; True once accepted (201 new, 200 the same run)."""
        self.submitted.add(token)
        body = {"dagId": dag_id, "inputs": {"token": token}, "runToken": token}
        try:
            response = await self.client.post(f"{BASE}/runs", json=body)
        except httpx.TransportError as exc:  # the API process must keep answering
            self.unexpected.append(f"{token}: {type(exc).__name__}: {exc}")
            return False
        if response.status_code in (200, 201):
            run_id = str(response.json()["runId"])
            previous = self.accepted.setdefault(token, run_id)
            if previous != run_id:
                self.unexpected.append(f"{token}: run {run_id}, earlier {previous}")
            self.accepted_at.setdefault(token, time.monotonic())
            return True
        if response.status_code == 503:
            try:
                check_envelope(response, 503, "STORE_UNAVAILABLE")
            except AssertionError as exc:
                self.unexpected.append(f"{token}: 503 without the envelope: {exc}")
            self.refusals += 1
            return False
        self.unexpected.append(f"{token}: {response.status_code} {response.text[:300]}")
        return False

    async def create_until_accepted(self, token: str, within: float, dag_id: str = DAG_ID) -> None:
        """Send the create, and again with the same token after each refusal."""
        deadline = time.monotonic() + within
        while not await self.create(token, dag_id):
            if time.monotonic() > deadline:
                self.unexpected.append(f"{token}: never accepted within {within}s")
                return
            await asyncio.sleep(0.1)

    async def client_loop(self) -> None:
        """One client: a new token each time, resent until accepted, until asked to stop."""
        while not self.stopping.is_set():
            self._next += 1
            await self.create_until_accepted(f"tok-{self._next:05d}", within=30)
            await asyncio.sleep(0.03)


def alive(services: list[Service]) -> list[str]:
    """Roles of the service processes that exited, with their exit codes."""
    return [
        f"{s.role} (exit {s.proc.returncode})" for s in services if s.proc.returncode is not None
    ]


async def rows(orch: Orchestrator, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of a SQL query, in its own read transaction."""
    return await orch.env.db.read(lambda c: [tuple(r) for r in c.execute(text(statement), params)])


async def listeners(orch: Orchestrator) -> int:
    """Backends currently LISTENing (each process's notify thread holds one)."""
    return await count(orch, "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")


async def check_runs(orch: Orchestrator, load: Load) -> None:
    """One run per runToken, each completed with one success per step and a sound chain."""
    stored = await rows(orch, "SELECT run_token, run_id FROM runs")
    by_token = {str(r[0]): str(r[1]) for r in stored}
    assert len(stored) == len(by_token), "a runToken has more than one run"
    assert set(by_token) == load.submitted, (
        f"lost: {sorted(load.submitted - set(by_token))[:10]}, "
        f"unknown: {sorted(set(by_token) - load.submitted)[:10]}"
    )
    assert by_token == load.accepted, "a create answered another run than the stored one"
    for run_id in by_token.values():
        view = await orch.runs.get(TENANT, run_id)
        assert view["status"] == "completed", view
        spec = SLOW_SPEC if view["dagId"] == SLOW_DAG_ID else SPEC
        assert len(view["steps"]) == len(spec["steps"]), view
        for step in view["steps"]:
            statuses = [a["status"] for a in step["attempts"]]
            assert statuses.count("succeeded") == 1, (run_id, step["stepId"], statuses)
            assert "running" not in statuses, (run_id, step["stepId"], statuses)
        assert (await orch.runs.verify(TENANT, run_id)).ok, run_id
    assert await count(orch, "SELECT COUNT(*) FROM queue_items") == 0, "work left queued"


async def test_services_ride_out_a_postgresql_restart_under_load(
    cluster: pg_cluster.LocalCluster, tmp_path: Path
) -> None:
    url = cluster.url
    keys = tmp_path / "keys"
    token = api_token(keys, TENANT, ["orchestrator:read", "orchestrator:write"])
    headers = {"Authorization": f"Bearer {token}", "X-Stella-Tenant": TENANT}
    orch = Orchestrator.open(Settings(database_url=url, database_connect_timeout_seconds=2))
    try:
        for document in (SPEC, SLOW_SPEC):
            await orch.catalog.publish(TENANT, parse_spec(document))
        async with AsyncExitStack() as stack:
            api_env = {**SERVICE_ENV, "STELLA_ORCH_KEYS_DIR": str(keys)}
            api = await stack.enter_async_context(
                service("api", url, tmp_path / "api.log", api_env)
            )
            workers = [
                await stack.enter_async_context(
                    service("worker", url, tmp_path / f"w{i}.log", SERVICE_ENV)
                )
                for i in (1, 2)
            ]
            scheduler = await stack.enter_async_context(
                service("scheduler", url, tmp_path / "scheduler.log", SERVICE_ENV)
            )
            services = [api, *workers, scheduler]
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=api.url, headers=headers, timeout=15)
            )
            load = Load(client)
            started = time.monotonic()
            clients = [asyncio.create_task(load.client_loop()) for _ in range(CLIENTS)]
            try:
                figures = await restart_under_load(orch, cluster, load, services)
            except BaseException:
                for task in clients:  # failing: do not wait for creates that cannot succeed
                    task.cancel()
                await asyncio.gather(*clients, return_exceptions=True)
                raise
            load.stopping.set()
            await asyncio.gather(*clients)  # each client resends its last token until accepted

            assert not load.unexpected, load.unexpected[:10]

            async def all_ended() -> bool:
                return await count(orch, UNFINISHED) == 0

            await until_true(all_ended, 30, "every run ended after the restart")
            elapsed = time.monotonic() - started
            assert not alive(services), f"exited: {alive(services)}"
        await check_runs(orch, load)
        lost = await count(orch, "SELECT COUNT(*) FROM attempts WHERE status = 'lost'")
        print(
            f"PostgreSQL restart under load: {len(load.accepted)} runs "
            f"({figures['unfinished']:.0f} unfinished at the stop, {lost} attempts lost), "
            f"down {figures['outage']:.1f}s, {load.refusals} 503s to the clients; after the "
            f"start: API back in {figures['api']:.2f}s, both workers in "
            f"{figures['workers']:.2f}s, LISTEN in {figures['listen']:.2f}s; "
            f"all done in {elapsed:.1f}s"
        )
    finally:
        await orch.close()


async def restart_under_load(
    orch: Orchestrator, cluster: pg_cluster.LocalCluster, load: Load, services: list[Service]
) -> dict[str, float]:
    """Stop PostgreSQL mid-load, check the outage behaviour, start it, check the recovery."""
    _api, *workers, _scheduler = services

    async def in_flight() -> bool:
        return len(load.accepted) >= 40 and await count(orch, UNFINISHED) > 0

    await until_true(in_flight, 20, "runs are being created and worked")
    assert not load.unexpected, load.unexpected[:10]
    assert await listeners(orch) >= len(workers), "the workers do not LISTEN"
    some_run = next(iter(load.accepted.values()))
    for token in SLOW_TOKENS:
        await load.create_until_accepted(token, within=5, dag_id=SLOW_DAG_ID)
    slow_runs = [load.accepted[t] for t in SLOW_TOKENS]

    async def slow_steps_running() -> bool:
        running = "SELECT COUNT(*) FROM attempts WHERE status = 'running' AND run_id IN (:a, :b)"
        return await count(orch, running, a=slow_runs[0], b=slow_runs[1]) == len(slow_runs)

    await until_true(slow_steps_running, 5, "the slow steps run")
    unfinished = await count(orch, UNFINISHED)

    down_at = time.monotonic()
    await asyncio.to_thread(cluster.halt)
    refused_before = load.refusals
    # While it is down: a create and reads get 503 with the envelope, nobody exits.
    probe = load.client.post(
        f"{BASE}/runs", json={"dagId": DAG_ID, "inputs": {}, "runToken": "probe-down"}
    )
    check_envelope(await probe, 503, "STORE_UNAVAILABLE")
    load.submitted.add("probe-down")  # refused: it must be resent and end up as one run
    check_envelope(await load.client.get(f"{BASE}/runs/{some_run}"), 503, "STORE_UNAVAILABLE")
    check_envelope(await load.client.get(f"{BASE}/runs"), 503, "STORE_UNAVAILABLE")
    await asyncio.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
    assert not alive(services), f"exited while PostgreSQL was down: {alive(services)}"
    assert load.refusals > refused_before, "the clients saw no 503 during the outage"

    await asyncio.to_thread(cluster.resume)
    up_at = time.monotonic()
    up_us = time.time_ns() // 1000
    figures = {"outage": up_at - down_at, "unfinished": unfinished}
    await load.create_until_accepted("probe-down", within=15)
    assert "probe-down" in load.accepted, load.unexpected[-3:]
    figures["api"] = load.accepted_at["probe-down"] - up_at
    read_back = await load.client.get(f"{BASE}/runs/{some_run}")
    assert read_back.status_code == 200, read_back.text
    mine = {worker_id(w) for w in workers}

    async def both_workers_back() -> bool:
        done = await rows(
            orch,
            "SELECT DISTINCT worker_id FROM attempts WHERE started_us > :up AND status = :s",
            up=up_us,
            s="succeeded",
        )
        return mine <= {str(r[0]) for r in done}

    await until_true(both_workers_back, 20, "both workers run steps again")
    figures["workers"] = time.monotonic() - up_at

    async def listening_again() -> bool:
        return await listeners(orch) >= len(workers)

    await until_true(listening_again, 15, "the workers LISTEN again")
    figures["listen"] = time.monotonic() - up_at

    async def scheduler_leads_again() -> bool:
        lease = await rows(orch, "SELECT expires_us FROM leader_leases WHERE name = 'scheduler'")
        return bool(lease) and int(lease[0][0]) - SCHEDULER_TTL_SECONDS * 1_000_000 >= up_us

    await until_true(scheduler_leads_again, 15, "the scheduler renews its lease again")
    await asyncio.sleep(1.0)  # more load on the recovered services
    assert any(at > up_at for at in load.accepted_at.values()), "no create after the restart"
    return figures


def worker_id(worker: Service) -> str:
    """The id a worker process records on its attempts (host:pid, see worker_identity)."""
    return f"{os.uname().nodename}:{worker.proc.pid}"
