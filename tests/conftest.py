"""Shared fixtures: a fresh, real store per test and a harness that drives the engine.

Every integration test runs once per entry of `STORES`. Only SQLite exists today; PostgreSQL
is added by giving `PROVISIONERS` a function that creates an empty database and returns its URL
(and `STORES` its name). Everything that differs between databases — provisioning and the
trigger SQL used for fault injection — lives in this file, so the tests themselves stay
dialect-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from stellaorch.domain.ledger import ChainReport
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.catalog import Published
from stellaorch.engine.execution import Created, RunRequest
from stellaorch.engine.runs import RunService
from stellaorch.engine.worker import Worker
from stellaorch.settings import Settings

TENANT = "acme"
TERMINAL_RUN = frozenset({"completed", "failed", "cancelled"})


# -- stores -------------------------------------------------------------------------------
def _sqlite_store(directory: Path) -> str:
    return f"sqlite:///{directory}/o.db"


# name -> function(empty directory) -> URL of a new, empty database
PROVISIONERS: dict[str, Callable[[Path], str]] = {"sqlite": _sqlite_store}
STORES = ["sqlite"]  # + "postgresql" once CI provides a server

# Fault injection by triggers, per dialect. Each entry: (install statements, remove statements).
_ABORT = "BEGIN SELECT RAISE(ABORT, 'blocked by test trigger'); END"
_PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION stella_test_block() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'blocked by test trigger'; END $$"
)
TRIGGERS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "ledger_append_only": {
        "sqlite": (
            [
                f"CREATE TRIGGER t_ledger_no_update BEFORE UPDATE ON ledger_entries {_ABORT}",
                f"CREATE TRIGGER t_ledger_no_delete BEFORE DELETE ON ledger_entries {_ABORT}",
            ],
            ["DROP TRIGGER t_ledger_no_update", "DROP TRIGGER t_ledger_no_delete"],
        ),
        "postgresql": (
            [
                _PG_FUNCTION,
                "CREATE TRIGGER t_ledger_no_rewrite BEFORE UPDATE OR DELETE ON ledger_entries "
                "FOR EACH ROW EXECUTE FUNCTION stella_test_block()",
            ],
            ["DROP TRIGGER t_ledger_no_rewrite ON ledger_entries"],
        ),
    },
    "ledger_insert_fails": {
        "sqlite": (
            [f"CREATE TRIGGER t_ledger_no_insert BEFORE INSERT ON ledger_entries {_ABORT}"],
            ["DROP TRIGGER t_ledger_no_insert"],
        ),
        "postgresql": (
            [
                _PG_FUNCTION,
                "CREATE TRIGGER t_ledger_no_insert BEFORE INSERT ON ledger_entries "
                "FOR EACH ROW EXECUTE FUNCTION stella_test_block()",
            ],
            ["DROP TRIGGER t_ledger_no_insert ON ledger_entries"],
        ),
    },
}


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which database this test runs against."""
    return str(request.param)


@pytest.fixture
def new_store_url(store_kind: str, tmp_path: Path) -> Callable[[], str]:
    """A function that provisions a new, empty store on each call and returns its URL."""

    def provision() -> str:
        return PROVISIONERS[store_kind](Path(tempfile.mkdtemp(dir=tmp_path)))

    return provision


# -- the harness --------------------------------------------------------------------------
class Harness:
    """An Orchestrator on its own store, plus the moves every scenario repeats.

    Tests reach helpers through the fixture (`harness.spec(...)`, `harness.step(...)`) rather
    than by importing this module; they import `Harness` for annotations only.
    """

    tenant = TENANT

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []
        self.check_chains = True  # tests that tamper with the ledger turn this off

    @property
    def runs(self) -> RunService:
        return self.orchestrator.runs

    @property
    def dialect(self) -> str:
        return self.orchestrator.env.db.dialect

    # -- arranging ------------------------------------------------------------------------
    @staticmethod
    def spec(
        dag_id: str,
        steps: list[dict[str, Any]],
        edges: Iterable[tuple[str, str]] = (),
        version: int | str = 1,
    ) -> dict[str, Any]:
        """A spec document from steps and (from, to) pairs."""
        return {
            "dagId": dag_id,
            "version": version,
            "steps": steps,
            "edges": [{"from": a, "to": b} for a, b in edges],
        }

    @staticmethod
    def step(view: Mapping[str, Any], step_id: str) -> dict[str, Any]:
        """One step of a run view."""
        found = [s for s in view["steps"] if s["stepId"] == step_id]
        assert found, f"no step {step_id!r} in run {view['runId']}"
        return dict(found[0])

    async def publish(self, spec: Mapping[str, Any], tenant: str = TENANT) -> Published:
        """Publish a spec document for `tenant`."""
        return await self.orchestrator.catalog.publish(tenant, parse_spec(spec))

    async def create(
        self,
        dag_id: str,
        inputs: Any = None,
        *,
        tenant: str = TENANT,
        run_token: str | None = None,
        version: str | None = None,
    ) -> Created:
        """Create a run (no worker involved)."""
        request = RunRequest(tenant, dag_id, {} if inputs is None else inputs, run_token, version)
        return await self.runs.create(request)

    # -- workers --------------------------------------------------------------------------
    def start_worker(self, concurrency: int | None = None) -> Worker:
        """Start an in-process worker; it is stopped (and its crash raised) at teardown."""
        orch = self.orchestrator
        worker = Worker(orch.env, orch.plugins, concurrency=concurrency)
        self.workers.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def stop_workers(self) -> None:
        """Stop every worker and re-raise the first one that crashed."""
        workers, self.workers = self.workers, []
        for worker, _ in workers:
            worker.stop()
        results = await asyncio.gather(*(t for _, t in workers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @asynccontextmanager
    async def worker(self, concurrency: int | None = None) -> AsyncIterator[Worker]:
        """A worker for the duration of the block."""
        worker = self.start_worker(concurrency)
        try:
            yield worker
        finally:
            await self.stop_workers()

    # -- waiting --------------------------------------------------------------------------
    async def wait_until(
        self, probe: Callable[[], Awaitable[bool]], within: float, what: str
    ) -> None:
        """Poll `probe` until true; fail with `what` after `within` s or if a worker crashed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await probe():
            self._raise_if_a_worker_crashed()
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within}s waiting until {what}")
            await asyncio.sleep(0.02)

    def _raise_if_a_worker_crashed(self) -> None:
        for _, task in self.workers:
            if task.done():
                raise AssertionError("a worker stopped on its own") from task.exception()

    async def wait_done(
        self, run_id: str, *, tenant: str = TENANT, within: float = 10.0
    ) -> dict[str, Any]:
        """Wait until the run is terminal and return its view."""

        async def ended() -> bool:
            return await self.runs.status(tenant, run_id) in TERMINAL_RUN

        await self.wait_until(ended, within, f"run {run_id} ended")
        return await self.view(run_id, tenant)

    async def run_to_end(
        self,
        spec: Mapping[str, Any],
        inputs: Any = None,
        *,
        tenant: str = TENANT,
        concurrency: int | None = None,
        within: float = 10.0,
    ) -> dict[str, Any]:
        """Publish `spec`, start a run of it, work it to its end, return the run view."""
        await self.publish(spec, tenant)
        created = await self.create(spec["dagId"], inputs, tenant=tenant)
        async with self.worker(concurrency):
            return await self.wait_done(created.run.run_id, tenant=tenant, within=within)

    async def wait_for_step(
        self, run_id: str, step_id: str, status: str, *, tenant: str = TENANT, within: float = 5
    ) -> None:
        """Wait until a step reaches `status`."""

        async def reached() -> bool:
            return bool(self.step(await self.view(run_id, tenant), step_id)["status"] == status)

        await self.wait_until(reached, within, f"step {step_id} is {status}")

    # -- reading --------------------------------------------------------------------------
    async def view(self, run_id: str, tenant: str = TENANT) -> dict[str, Any]:
        """The run view the faces serve."""
        return await self.runs.get(tenant, run_id)

    async def ledger(self, run_id: str, tenant: str = TENANT) -> list[dict[str, Any]]:
        """The run's ledger entry bodies in seq order, read straight from the table."""
        rows = await self.sql(
            "SELECT body FROM ledger_entries WHERE tenant = :tenant AND run_id = :run_id "
            "ORDER BY seq",
            tenant=tenant,
            run_id=run_id,
        )
        return [json.loads(row["body"]) for row in rows]

    async def run_ids(self, tenant: str = TENANT) -> list[str]:
        """Ids of the tenant's runs, oldest first, read straight from the table."""
        rows = await self.sql(
            "SELECT run_id FROM runs WHERE tenant = :t ORDER BY created_us, run_id", t=tenant
        )
        return [r["run_id"] for r in rows]

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Run raw SQL in its own transaction (tampering, fault injection, direct reads)."""

        def work(conn: Any) -> list[dict[str, Any]]:
            result = conn.execute(text(statement), params)
            return [dict(r) for r in result.mappings()] if result.returns_rows else []

        return await self.orchestrator.env.db.transact(work)

    async def install(self, trigger: str) -> None:
        """Install one of the `TRIGGERS` for this store's dialect."""
        for statement in TRIGGERS[trigger][self.dialect][0]:
            await self.sql(statement)

    async def remove(self, trigger: str) -> None:
        """Remove a trigger installed with `install`."""
        for statement in TRIGGERS[trigger][self.dialect][1]:
            await self.sql(statement)

    @asynccontextmanager
    async def store_outage(self) -> AsyncIterator[None]:
        """Make the store refuse every transaction for the block (simulated on SQLite only)."""
        if self.dialect != "sqlite":
            pytest.skip("store outages are simulated on SQLite only")
        path = make_url(self.orchestrator.env.settings.database_url).database
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            # The engine begins every transaction IMMEDIATE: while another connection holds
            # the write lock, each one waits out the busy timeout and fails.
            await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
            yield
            await asyncio.to_thread(conn.execute, "ROLLBACK")
        finally:
            conn.close()

    async def verify_every_run(self) -> list[ChainReport]:
        """Verify the ledger chain of every run in the store, of every tenant."""
        rows = await self.sql("SELECT tenant, run_id FROM runs ORDER BY run_id")
        return [await self.runs.verify(r["tenant"], r["run_id"]) for r in rows]


def test_settings(url: str, **overrides: Any) -> Settings:
    """Settings for tests: quick polling, leases long enough not to expire by accident."""
    values: dict[str, Any] = {
        "database_url": url,
        "lease_ttl_seconds": 10.0,
        "poll_interval_seconds": 0.05,
        **overrides,
    }
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@asynccontextmanager
async def _open_harness(url: str, **overrides: Any) -> AsyncIterator[Harness]:
    harness = Harness(Orchestrator.open(test_settings(url, **overrides)))
    try:
        yield harness
        await harness.stop_workers()
        if harness.check_chains:
            broken = [r for r in await harness.verify_every_run() if not r.ok]
            assert not broken, f"ledger chains broken after the scenario: {broken}"
    finally:
        with contextlib.suppress(Exception):
            await harness.stop_workers()
        await harness.orchestrator.close()


OpenHarness = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def open_harness(new_store_url: Callable[[], str]) -> OpenHarness:
    """`async with open_harness(url=None, **settings) as h:` — a new store unless `url` given.

    On a clean exit every run's ledger chain in the store must verify.
    """

    def open_(url: str | None = None, **overrides: Any) -> AbstractAsyncContextManager[Harness]:
        return _open_harness(url or new_store_url(), **overrides)

    return open_


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(open_harness: OpenHarness) -> AsyncIterator[MakeHarness]:
    """`await make_harness(url=None, **settings)`: harnesses closed (and checked) at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(url: str | None = None, **overrides: Any) -> Harness:
            return await stack.enter_async_context(open_harness(url, **overrides))

        yield make


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    """A harness on a fresh store with default test settings."""
    return await make_harness()


@pytest.fixture
def store_url(new_store_url: Callable[[], str]) -> Iterator[str]:
    """The URL of one fresh, empty store."""
    yield new_store_url()
