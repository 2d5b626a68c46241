"""A broken store is reported as broken: refused at start, not ready when writes fail or the
disk is nearly full, and found out by the full integrity check."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, MakeApi, assert_envelope, open_api, spec  # noqa: E402

from conftest import TRIGGERS  # noqa: E402
from stellaorch.domain.errors import StoreCorrupt, StoreNotStella  # noqa: E402
from stellaorch.engine.app import Orchestrator  # noqa: E402
from stellaorch.settings import Settings  # noqa: E402

A = "acme"
PIPE = spec("pipe", [{"id": "a", "plugin": "noop"}, {"id": "b", "plugin": "noop"}], [("a", "b")])
WIDE_WINDOW = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


# -- arranging ----------------------------------------------------------------------------
def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


async def store_with_runs(path: Path, keys_dir: Path, runs: int = 3) -> None:
    """A SQLite store at `path` holding finished runs, closed (WAL checkpointed) afterwards."""
    async with open_api(sqlite_url(path), keys_dir) as api:
        await api.publish(A, PIPE)
        started = [await api.start(A, "pipe", {"i": i}) for i in range(runs)]
        api.start_worker()
        for run in started:
            assert await api.wait(A, run["runId"]) == "completed"


def corrupt_table(path: Path, table: str) -> None:
    """Overwrite bytes in the middle of the table's root page (its cell pointers), as a bad
    sector or a torn copy would."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        [(root,)] = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
    finally:
        conn.close()
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size + 8)
        handle.write(b"\xff" * 64)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_store(path: Path, **overrides: Any) -> Orchestrator:
    return Orchestrator.open(Settings(database_url=sqlite_url(path), **overrides))


async def health(api: Api, **params: str) -> tuple[int, dict[str, Any]]:
    response = await api.client.get(
        f"{BASE}/admin/health", params=params, headers=api.headers(A, scopes=[READ])
    )
    return response.status_code, response.json()


# -- the start check ----------------------------------------------------------------------
async def test_a_corrupted_store_is_refused_at_start_and_left_untouched(
    tmp_path: Path, keys_dir: Path
) -> None:
    path = tmp_path / "o.db"
    await store_with_runs(path, keys_dir)
    corrupt_table(path, "ledger_entries")
    before = digest(path)

    with pytest.raises(StoreCorrupt) as refused:
        open_store(path)

    assert refused.value.code == "STORE_CORRUPT"
    assert "quick integrity check" in refused.value.message
    assert "\n" not in refused.value.message
    assert digest(path) == before


async def test_the_full_start_check_also_refuses_a_corrupted_store(
    tmp_path: Path, keys_dir: Path
) -> None:
    path = tmp_path / "o.db"
    await store_with_runs(path, keys_dir)
    corrupt_table(path, "runs")

    with pytest.raises(StoreCorrupt, match="full integrity check"):
        open_store(path, store_start_check="full")


async def test_a_sound_store_passes_the_start_check(tmp_path: Path, keys_dir: Path) -> None:
    path = tmp_path / "o.db"
    await store_with_runs(path, keys_dir, runs=1)

    orchestrator = open_store(path, store_start_check="full")
    await orchestrator.close()


def _open_and_close(url: str) -> str:
    """Open the store in a fresh process (as `api` and `worker` starting together would)."""
    try:
        orchestrator = Orchestrator.open(Settings(database_url=url))
    except Exception as exc:  # reported back to the parent as text
        return repr(exc)
    orchestrator.env.db.close()
    return "ok"


def test_processes_starting_together_on_a_new_file_all_open_it(tmp_path: Path) -> None:
    # Each would see the others' half-made file and refuse it as empty or foreign.
    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        path = tmp_path / f"new{attempt}.db"
        with context.Pool(4) as pool:
            results = pool.map(_open_and_close, [f"sqlite:///{path}"] * 4)
        assert results == ["ok"] * 4
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f"new{n}.db" for n in range(attempt + 1)
        ], "a draft file or a journal was left behind"
        open_store(path, store_start_check="full").env.db.close()


def test_a_zero_byte_file_is_refused_not_initialised(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.touch()

    with pytest.raises(StoreCorrupt, match="empty"):
        open_store(path)

    assert path.stat().st_size == 0


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"not a database\n" * 500)
    before = digest(path)

    with pytest.raises(StoreCorrupt, match="not a SQLite database"):
        open_store(path)

    assert digest(path) == before


def test_a_sqlite_database_without_the_stella_schema_is_never_migrated_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()
    before = digest(path)

    with pytest.raises(StoreNotStella) as refused:
        open_store(path)

    assert refused.value.code == "STORE_NOT_STELLA"
    assert digest(path) == before


async def test_a_missing_file_is_created_as_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "new" / "o.db"

    orchestrator = open_store(path)
    await orchestrator.close()

    assert path.stat().st_size > 0
    open_store(path)  # and opens again: it is a Stella store now


async def test_a_store_damaged_after_start_answers_store_corrupt_not_500(
    tmp_path: Path, keys_dir: Path
) -> None:
    path = tmp_path / "o.db"
    await store_with_runs(path, keys_dir)
    corrupt_table(path, "ledger_entries")

    async with open_api(sqlite_url(path), keys_dir, store_start_check="off") as api:
        response = await api.client.get(
            f"{BASE}/ledger/export", params=WIDE_WINDOW, headers=api.headers(A)
        )

    assert response.status_code == 503
    assert assert_envelope(response)["code"] == "STORE_CORRUPT"


# -- readiness: the write probe and free disk ------------------------------------------------
async def install(api: Api, trigger: str, part: int = 0) -> None:
    for statement in TRIGGERS[trigger][api.orchestrator.env.db.dialect][part]:
        await api.sql(statement)


async def test_health_is_503_not_ready_when_the_store_refuses_writes(make_api: MakeApi) -> None:
    api = await make_api()
    await install(api, "probe_write_fails")

    status, document = await health(api)

    assert status == 503
    assert document["ready"] is False and document["live"] is True
    assert document["store"]["reachable"] is True and document["store"]["writable"] is False
    assert document["error"]["code"] == "STORE_NOT_WRITABLE"
    assert document["error"]["message"] and len(document["error"]["traceId"]) == 32
    await install(api, "probe_write_fails", part=1)
    assert (await health(api))[0] == 200  # ready again once writes go through


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Any]:
    """Make the driver fail every write to the probe table as SQLite does on a full disk."""
    engines: list[Any] = []

    def fail(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        if "store_probe" in statement and not statement.lstrip().upper().startswith("SELECT"):
            raise sqlite3.OperationalError("database or disk is full")

    def attach(engine: Any) -> None:
        event.listen(engine, "do_execute", fail)
        engines.append(engine)

    yield attach
    for engine in engines:
        event.remove(engine, "do_execute", fail)


async def test_a_full_disk_is_not_ready_on_health_and_readyz(
    tmp_path: Path, keys_dir: Path, full_disk: Any
) -> None:
    async with open_api(sqlite_url(tmp_path / "o.db"), keys_dir) as api:
        full_disk(api.orchestrator.env.db.engine)
        status, document = await health(api)
        ready = await api.client.get("/readyz")

    assert status == 503 and document["ready"] is False
    assert document["error"]["code"] == "STORE_NOT_WRITABLE"
    assert "database or disk is full" in document["error"]["message"]
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "STORE_NOT_WRITABLE"


async def test_low_free_disk_beside_the_store_is_not_ready(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    # 20 MiB left on the file system: below the default minimum of 32 MiB
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=20 * 1024 * 1024))
    async with open_api(sqlite_url(tmp_path / "o.db"), keys_dir) as api:
        status, document = await health(api)

    assert status == 503 and document["ready"] is False
    assert document["store"]["writable"] is True
    assert document["store"]["freeDiskMb"] == 20 and document["store"]["minFreeDiskMb"] == 32
    assert document["error"]["code"] == "STORE_DISK_LOW"


async def test_free_disk_above_the_minimum_is_ready(tmp_path: Path, keys_dir: Path) -> None:
    async with open_api(sqlite_url(tmp_path / "o.db"), keys_dir, store_min_free_mb=1) as api:
        status, document = await health(api)

    assert status == 200 and document["ready"] is True
    assert document["store"]["writable"] is True and document["store"]["freeDiskMb"] >= 1
    assert "error" not in document


async def test_readyz_needs_no_token_and_shows_no_tenant_data(make_api: MakeApi) -> None:
    api = await make_api()
    await api.publish(A, PIPE)
    await api.start(A, "pipe")

    response = await api.client.get("/readyz")
    live = await api.client.get("/livez")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "store": {"reachable": True, "writable": True}}
    assert live.status_code == 200 and live.json() == {"live": True}


async def test_readyz_is_503_when_the_store_refuses_writes(make_api: MakeApi) -> None:
    api = await make_api()
    await install(api, "probe_write_fails")

    response = await api.client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False and body["error"]["code"] == "STORE_NOT_WRITABLE"
    assert "blocked by test trigger" not in response.text  # no driver detail without a token


# -- the full integrity check on demand ------------------------------------------------------
async def test_full_check_needs_the_admin_scope(make_api: MakeApi) -> None:
    api = await make_api()

    denied = await api.client.get(
        f"{BASE}/admin/health", params={"check": "full"}, headers=api.headers(A, scopes=[READ])
    )
    allowed = await api.client.get(
        f"{BASE}/admin/health", params={"check": "full"}, headers=api.headers(A)
    )

    assert denied.status_code == 403
    assert assert_envelope(denied)["code"] == "SCOPE_REQUIRED"
    assert allowed.status_code == 200
    assert allowed.json()["store"]["integrity"] == {"check": "full", "ok": True, "problems": []}


async def test_full_check_reports_a_damaged_store_as_not_ready(
    tmp_path: Path, keys_dir: Path
) -> None:
    path = tmp_path / "o.db"
    await store_with_runs(path, keys_dir)
    corrupt_table(path, "ledger_entries")

    async with open_api(sqlite_url(path), keys_dir, store_start_check="off") as api:
        plain, _ = await health(api)
        response = await api.client.get(
            f"{BASE}/admin/health", params={"check": "full"}, headers=api.headers(A)
        )

    assert plain == 200  # the quick probes do not read the damaged table
    assert response.status_code == 503
    document = response.json()
    assert document["store"]["integrity"]["ok"] is False
    assert document["store"]["integrity"]["problems"]
    assert document["error"]["code"] == "STORE_CORRUPT"
