"""Real `stella orch worker` processes in the registry: listed by `stella orch worker list`.

An API process and two worker processes share one store (a SQLite file, or PostgreSQL).
A SIGKILLed worker leaves its row behind, and `worker list` stops showing it once its TTL
has passed; a worker stopped with SIGTERM removes its row at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from services import ROOT, api_token, base_env, service, until_true

TTL_SECONDS = 1.5
REGISTRY_ENV = {
    "STELLA_ORCH_HEARTBEAT_INTERVAL_SECONDS": "0.3",
    "STELLA_ORCH_WORKER_TTL_SECONDS": str(TTL_SECONDS),
    "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.1",
}


async def worker_list(api_url: str, token: str) -> list[dict[str, Any]]:
    """`stella orch worker list --output json` as a user runs it; its items."""
    argv = [sys.executable, "-m", "stellaorch.cli.main", "orch", "worker", "list"]
    argv += ["--api-url", api_url, "--token", token, "--tenant", "acme", "--output", "json"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=base_env(),
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    items = json.loads(out)["items"]
    assert isinstance(items, list)
    return items


def pids(items: list[dict[str, Any]]) -> set[int]:
    """The worker pids a listing shows."""
    return {int(w["pid"]) for w in items}


async def test_a_killed_worker_leaves_worker_list_within_its_ttl(tmp_path: Path) -> None:
    await killed_and_stopped_workers(f"sqlite:///{tmp_path}/o.db", tmp_path)


async def test_a_killed_worker_leaves_worker_list_within_its_ttl_on_postgresql(
    pg_store_url: Callable[[], str], tmp_path: Path
) -> None:
    await killed_and_stopped_workers(pg_store_url(), tmp_path)


async def killed_and_stopped_workers(url: str, tmp_path: Path) -> None:
    """Two workers listed; the SIGKILLed one gone after its TTL; the SIGTERMed one at once."""
    keys = tmp_path / "keys"
    token = api_token(keys, "*", ["orchestrator:read"])
    env = {**REGISTRY_ENV, "STELLA_ORCH_KEYS_DIR": str(keys)}
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(service("api", url, tmp_path / "api.log", env))
        victim = await stack.enter_async_context(
            service("worker", url, tmp_path / "w1.log", env, ("--concurrency", "3"))
        )
        survivor = await stack.enter_async_context(
            service("worker", url, tmp_path / "w2.log", env, ("--tenants", "acme"))
        )
        both = {victim.proc.pid, survivor.proc.pid}

        async def both_listed() -> bool:
            return pids(await worker_list(api.url, token)) == both

        await until_true(both_listed, 20, "both workers are listed")
        by_pid = {w["pid"]: w for w in await worker_list(api.url, token)}
        assert by_pid[victim.proc.pid]["concurrency"] == 3
        assert by_pid[victim.proc.pid]["servesAllTenants"] is True
        assert by_pid[survivor.proc.pid]["tenants"] == ["acme"]

        await victim.kill()
        killed_at = time.monotonic()
        await asyncio.sleep(TTL_SECONDS + 0.1)
        # A listing asked for after the TTL no longer shows the killed worker.
        assert pids(await worker_list(api.url, token)) == {survivor.proc.pid}
        print(f"killed worker gone from `worker list` {time.monotonic() - killed_at:.2f}s after")

        survivor.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.proc.wait(), 20) == 0
        # A clean stop removes the row at once, without waiting for the TTL.
        assert await worker_list(api.url, token) == []
