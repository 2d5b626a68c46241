"""Shared fixtures: a fresh, real store per test and a harness that drives the engine.

Every integration test runs once per entry of `STORES`: SQLite (a file per store) and
PostgreSQL (a schema per store in a session database, see tests/pg_cluster.py). Without a
PostgreSQL server (STELLA_TEST_PG_URL unset and no binaries to start one) the PostgreSQL cases
are skipped with the reason; CI sets STELLA_TEST_PG_REQUIRED so they fail instead. Everything
that differs between databases — provisioning, outages and the trigger SQL used for fault
injection — lives in this file, so the tests themselves stay dialect-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import tempfile
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

import pg_cluster
from stellaorch.domain.ledger import ChainReport
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.catalog import Published
from stellaorch.engine.requests import Created, RunRequest
from stellaorch.engine.runs import RunService
from stellaorch.engine.worker import Worker
from stellaorch.plugins.sandbox import Sandbox, SandboxConfig
from stellaorch.settings import Settings
from stellaorch.store.database import Database
from stellaorch.store.invariants import find_stranded

TENANT = "acme"
SANDBOX_REQUIRED_ENV = "STELLA_TEST_SANDBOX_REQUIRED"
TERMINAL_RUN = frozenset({"completed", "failed", "cancelled"})


# -- the step sandbox ----------------------------------------------------------------------
def _sandbox_problem() -> str:
    """Why bubblewrap cannot run steps on this machine, or '' when it can.

    The executable is the one STELLA_ORCH_SANDBOX_BWRAP names (default: `bwrap` on PATH).
    """
    return Sandbox(SandboxConfig(bwrap=Settings().sandbox_bwrap)).status().reason


SANDBOX_PROBLEM = _sandbox_problem()
if SANDBOX_PROBLEM and not os.environ.get(SANDBOX_REQUIRED_ENV):
    # Everything else still runs, unconfined; the sandbox's own tests skip with the reason.
    os.environ["STELLA_ORCH_SANDBOX"] = "off"


# -- ports -------------------------------------------------------------------------------
DEFAULT_API_PORT = Settings.model_fields["api_port"].default


@pytest.fixture(scope="session", autouse=True)
def default_port_taken() -> Iterator[None]:
    """Hold the default API port for the whole session, as a developer's running `serve` would.

    A test that starts a server without asking for a free port then fails here too, instead
    of only on a machine where 8440 happens to be busy.
    """
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_API_PORT))
        holder.listen(1)
    except OSError:
        pass  # something already holds it: the same condition, provided by someone else
    try:
        yield
    finally:
        holder.close()


def pytest_report_header() -> str:
    """Say on top of the run whether script steps run sandboxed."""
    if not SANDBOX_PROBLEM:
        return "step sandbox: bubblewrap available, script steps run sandboxed"
    return f"step sandbox: UNAVAILABLE ({SANDBOX_PROBLEM}); script steps run unconfined"


@pytest.fixture
def require_sandbox() -> None:
    """Skip (or fail where CI sets STELLA_TEST_SANDBOX_REQUIRED) without bubblewrap."""
    if SANDBOX_PROBLEM:
        if os.environ.get(SANDBOX_REQUIRED_ENV):
            pytest.fail(f"the step sandbox is required here: {SANDBOX_PROBLEM}")
        pytest.skip(f"sandbox tests skipped: {SANDBOX_PROBLEM}")


# -- stores -------------------------------------------------------------------------------
STORES = ["sqlite", "postgresql"]
Outage = Callable[[], AbstractAsyncContextManager[None]]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[pg_cluster.TestDatabase]:
    """The session's PostgreSQL test database (skips, or fails in CI, without a server)."""
    try:
        with pg_cluster.server() as url:
            database = pg_cluster.TestDatabase(url)
            try:
                yield database
            finally:
                database.close()
    except pg_cluster.Unavailable as exc:
        if os.environ.get(pg_cluster.REQUIRED_ENV):
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(f"PostgreSQL store tests skipped: {exc}")


class Stores:
    """Provisions fresh, empty stores of one kind for a test and drops them afterwards."""

    def __init__(
        self, kind: str, directory: Path, pg: pg_cluster.TestDatabase | None = None
    ) -> None:
        self.kind = kind
        self._directory = directory
        self._pg = pg
        self._schemas: list[str] = []
        self.urls: list[str] = []

    def new_url(self) -> str:
        """The URL of a new, empty store."""
        if self._pg is None:
            url = f"sqlite:///{tempfile.mkdtemp(dir=self._directory)}/o.db"
        else:
            schema, url = self._pg.new_store()
            self._schemas.append(schema)
        self.urls.append(url)
        return url

    def stranded(self) -> list[str]:
        """Stranded work (`find_stranded`) in every store this provisioner handed out."""
        found: list[str] = []
        for url in self.urls:
            found.extend(f"{url}: {problem}" for problem in _stranded_in(url))
        return found

    def outage(self, url: str) -> AbstractAsyncContextManager[None]:
        """A block during which the store at `url` refuses every transaction."""
        if self._pg is None:
            return _sqlite_outage(url)
        return self._pg.outage()

    def drop(self) -> None:
        if self._pg is not None:
            for schema in self._schemas:
                self._pg.drop_store(schema)


_CHECKED_TABLES = frozenset({"runs", "step_executions", "queue_items"})


def _stranded_in(url: str) -> list[str]:
    """Stranded work in one store; nothing for a store never created or not yet migrated."""
    if url.startswith("sqlite") and not Path(str(make_url(url).database)).exists():
        return []
    db = Database.open(url)
    try:
        tables = set(db.read_sync(lambda conn: inspect(conn).get_table_names()))
        return db.read_sync(find_stranded) if tables >= _CHECKED_TABLES else []
    finally:
        db.close()


@asynccontextmanager
async def _sqlite_outage(url: str) -> AsyncIterator[None]:
    """Hold SQLite's write lock from another connection: every transaction waits out its busy
    timeout (the engine begins every one IMMEDIATE) and fails as StoreUnavailable."""
    path = make_url(url).database
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
        yield
        await asyncio.to_thread(conn.execute, "ROLLBACK")
    finally:
        conn.close()


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
    # the readiness probe's write is refused, as on a full disk or a read-only store
    "probe_write_fails": {
        "sqlite": (
            [
                f"CREATE TRIGGER t_probe_no_insert BEFORE INSERT ON store_probe {_ABORT}",
                f"CREATE TRIGGER t_probe_no_update BEFORE UPDATE ON store_probe {_ABORT}",
            ],
            ["DROP TRIGGER t_probe_no_insert", "DROP TRIGGER t_probe_no_update"],
        ),
        "postgresql": (
            [
                _PG_FUNCTION,
                "CREATE TRIGGER t_probe_no_write BEFORE INSERT OR UPDATE ON store_probe "
                "FOR EACH ROW EXECUTE FUNCTION stella_test_block()",
            ],
            ["DROP TRIGGER t_probe_no_write ON store_probe"],
        ),
    },
}


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which database this test runs against."""
    return str(request.param)


def pytest_configure(config: pytest.Config) -> None:
    """Register this suite's markers."""
    config.addinivalue_line(
        "markers", "stranded_ok: the test leaves stranded work on purpose (no check after it)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember on the test item whether its body passed (teardown checks only then)."""
    report = yield
    if report.when == "call":
        item.stash[_BODY_PASSED] = report.passed
    return report


_BODY_PASSED = pytest.StashKey[bool]()


def _check_stranded(provisioner: Stores, request: pytest.FixtureRequest) -> None:
    """After a passing integration test, no store it created holds stranded work.

    This runs when the provisioner is torn down, after every fixture that used its stores
    (harnesses, apps and their workers), so the stores are quiescent. A test that leaves
    stranded work on purpose says so with `@pytest.mark.stranded_ok`.
    """
    node = request.node
    if "integration" not in Path(str(node.path)).parts:
        return
    if node.get_closest_marker("stranded_ok") or not node.stash.get(_BODY_PASSED, False):
        return
    stranded = provisioner.stranded()
    assert not stranded, "stranded work after the test:\n" + "\n".join(stranded)


@pytest.fixture
def stores(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stores]:
    """The test's store provisioner for its store kind (checked for stranded work after)."""
    pg = request.getfixturevalue("pg_database") if store_kind == "postgresql" else None
    provisioner = Stores(store_kind, tmp_path, pg)
    try:
        yield provisioner
        _check_stranded(provisioner, request)
    finally:
        provisioner.drop()


@pytest.fixture
def new_store_url(stores: Stores) -> Callable[[], str]:
    """A function that provisions a new, empty store on each call and returns its URL."""
    return stores.new_url


@pytest.fixture
def pg_store_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Like new_store_url, PostgreSQL only: for tests of several processes on one store."""
    provisioner = Stores("postgresql", tmp_path, request.getfixturevalue("pg_database"))
    try:
        yield provisioner.new_url
        _check_stranded(provisioner, request)
    finally:
        provisioner.drop()


# -- the harness --------------------------------------------------------------------------
class Harness:
    """An Orchestrator on its own store, plus the moves every scenario repeats.

    Tests reach helpers through the fixture (`harness.spec(...)`, `harness.step(...)`) rather
    than by importing this module; they import `Harness` for annotations only.
    """

    tenant = TENANT

    def __init__(self, orchestrator: Orchestrator, outage: Outage | None = None) -> None:
        self.orchestrator = orchestrator
        self._outage = outage
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

    def store_outage(self) -> AbstractAsyncContextManager[None]:
        """Make the store refuse every transaction for the block.

        SQLite: another connection holds the write lock. PostgreSQL: the database's
        connections are cut and new ones refused, as while the server restarts.
        """
        if self._outage is None:
            return _sqlite_outage(self.orchestrator.env.settings.database_url)
        return self._outage()

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
        "schedule_min_interval_seconds": 1,  # the tests' crons fire every second
        **overrides,
    }
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@asynccontextmanager
async def _open_harness(
    url: str, outage: Outage | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    harness = Harness(Orchestrator.open(test_settings(url, **overrides)), outage)
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
def open_harness(stores: Stores) -> OpenHarness:
    """`async with open_harness(url=None, **settings) as h:` — a new store unless `url` given.

    On a clean exit every run's ledger chain in the store must verify.
    """

    def open_(url: str | None = None, **overrides: Any) -> AbstractAsyncContextManager[Harness]:
        url = url or stores.new_url()
        return _open_harness(url, lambda: stores.outage(url), **overrides)

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
