"""PostgreSQL specifics of the store: pooling and threads, timeouts, outages, races, upgrades."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Connection, text

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, MakeApi  # noqa: E402

from conftest import Harness, Stores  # noqa: E402
from stellaorch.domain.errors import StoreUnavailable, ValidationError  # noqa: E402
from stellaorch.engine import create  # noqa: E402
from stellaorch.engine.env import EngineEnv  # noqa: E402
from stellaorch.engine.requests import Created, RunRequest  # noqa: E402
from stellaorch.store.database import Database, StoreOptions  # noqa: E402
from stellaorch.store.migrate import current_revision, head_revision  # noqa: E402


@pytest.fixture
def store_kind() -> str:
    """Every test here runs on PostgreSQL only."""
    return "postgresql"


ONE_STEP = {"dagId": "one", "version": 1, "steps": [{"id": "x", "plugin": "noop"}], "edges": []}


def sleep_in_the_database(seconds: float) -> Any:
    def work(conn: Connection) -> None:
        conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})

    return work


# -- connections --------------------------------------------------------------------------
def test_a_server_that_refuses_connections_is_store_unavailable() -> None:
    db = Database.open(
        "postgresql://postgres@127.0.0.1:9/nothing", StoreOptions(connect_timeout_seconds=2)
    )
    try:
        with pytest.raises(StoreUnavailable):
            db.transact_sync(lambda conn: conn.execute(text("SELECT 1")))
    finally:
        db.close()


def test_a_statement_past_the_timeout_is_cancelled_as_store_unavailable(store_url: str) -> None:
    db = Database.open(store_url, StoreOptions(statement_timeout_ms=200))
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            db.transact_sync(sleep_in_the_database(5))
        assert time.monotonic() - started < 2
    finally:
        db.close()


async def test_transactions_run_side_by_side_on_several_store_threads(store_url: str) -> None:
    db = Database.open(store_url, StoreOptions(threads=4))
    try:
        started = time.monotonic()
        await asyncio.gather(*(db.transact(sleep_in_the_database(0.4)) for _ in range(4)))
        elapsed = time.monotonic() - started
    finally:
        db.close()

    assert db.threads == 4
    assert elapsed < 1.2, f"four 0.4 s transactions took {elapsed:.2f} s: they queued"


async def test_a_value_postgresql_cannot_hold_is_a_validation_error(harness: Harness) -> None:
    with pytest.raises(ValidationError):
        await harness.runs.get(harness.tenant, "run\x00id")


# -- outages ------------------------------------------------------------------------------
async def health_status(api: Any) -> tuple[int, dict[str, Any]]:
    response = await api.client.get(
        f"{BASE}/admin/health", headers=api.headers("acme", scopes=["orchestrator:read"])
    )
    return response.status_code, response.json()


async def test_health_is_503_while_the_database_refuses_connections(
    make_api: MakeApi, stores: Stores
) -> None:
    api = await make_api()
    assert (await health_status(api))[0] == 200

    async with stores.outage(api.settings.database_url):
        status, document = await health_status(api)

    assert status == 503
    assert document["store"]["reachable"] is False and document["ready"] is False
    assert (await health_status(api))[0] == 200  # pooled connections are replaced


# -- races --------------------------------------------------------------------------------
def create_one(conn: Connection, env: EngineEnv, request: RunRequest) -> Created:
    """The create transaction for one request; its error is raised."""
    result = create.create_runs(conn, env, [request])[0]
    if isinstance(result, Exception):
        raise result
    return result


def race_two_creates(env: EngineEnv) -> tuple[Created, Created, bool]:
    """The first create holds its transaction open while the second inserts the same token."""
    inserted, go = threading.Event(), threading.Event()
    request = RunRequest("acme", "one", {}, "tok-1")

    def first(conn: Connection) -> Created:
        created = create_one(conn, env, request)
        inserted.set()
        assert go.wait(10), "never released"
        return created

    def second(conn: Connection) -> Created:
        return create_one(conn, env, request)

    with ThreadPoolExecutor(2) as pool:
        winner = pool.submit(env.db.transact_sync, first)
        assert inserted.wait(10)
        loser = pool.submit(env.db.transact_sync, second)
        time.sleep(0.3)
        waited = not loser.done()  # blocked on the unique index behind the first
        go.set()
        return winner.result(10), loser.result(10), waited


async def test_a_create_losing_the_run_token_race_returns_the_winners_run(
    harness: Harness,
) -> None:
    await harness.publish(ONE_STEP)
    first, second, waited = await asyncio.to_thread(race_two_creates, harness.orchestrator.env)

    assert waited
    assert first.created and not second.created
    assert second.run.run_id == first.run.run_id
    assert len(await harness.run_ids()) == 1


# -- migrations ---------------------------------------------------------------------------
UPGRADE = (
    "import sys; from stellaorch.store.database import Database; "
    "from stellaorch.store.migrate import upgrade; "
    "db = Database.open(sys.argv[1]); upgrade(db.engine); db.close()"
)


def test_processes_upgrading_a_fresh_store_at_once_take_turns(store_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADE, store_url]) for _ in range(3)]
    codes = [p.wait(timeout=120) for p in procs]

    db = Database.open(store_url)
    try:
        assert codes == [0, 0, 0]
        assert current_revision(db.engine) == head_revision(db.engine)
    finally:
        db.close()
