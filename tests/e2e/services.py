"""Real `stella orch` service processes for the multi-process tests on a shared store.

Each process is started with this interpreter, its output going to a log file, and counts
as ready once it printed its `ready:` line. The context managers always kill and reap what
they started (PID 1 here does not reap orphans), so a failing test leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from stellaorch.engine.app import Orchestrator
from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token
from stellaorch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30


def base_env() -> dict[str, str]:
    """The environment without any STELLA_* setting, so the host cannot leak into a test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STELLA_")}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    """One running `stella orch ROLE` process and the file its output goes to."""

    role: str
    proc: asyncio.subprocess.Process
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        """The base URL of an API process."""
        assert self.port is not None, f"{self.role} serves no API"
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@asynccontextmanager
async def service(
    role: str,
    database_url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> AsyncIterator[Service]:
    """`stella orch ROLE` on `database_url`, yielded once ready; killed and reaped after."""
    port = free_port() if role in ("api", "serve") else None
    full_env = {
        **base_env(),
        "STELLA_ORCH_DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        # Each process's spans next to its log, never in a path other tests share.
        "STELLA_ORCH_TRACE_FILE": str(log.with_suffix(".traces.ndjson")),
        **(env or {}),
    }
    argv = [sys.executable, "-m", "stellaorch.cli.main", "orch", role, *args]
    if port is not None:
        argv += ["--port", str(port)]
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, env=full_env, cwd=ROOT
        )
    started = Service(role, proc, log, port)
    try:
        await until_true(lambda: _ready(started), STARTUP_SECONDS, f"{role} ready ({log})")
        yield started
    finally:
        await started.kill()


async def _ready(started: Service) -> bool:
    assert started.proc.returncode is None, f"{started.role} exited early:\n{started.output()}"
    return "ready: " in started.output()


async def until_true(probe: Callable[[], Any], within: float, what: str) -> float:
    """Poll the async `probe` until it returns true; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + within
    while not await probe():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting until {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def count(orch: Orchestrator, statement: str, **params: Any) -> int:
    """One integer from a SQL query, in its own read transaction."""
    return await orch.env.db.read(lambda c: int(c.execute(text(statement), params).scalar() or 0))


def api_token(keys_dir: Path, tenant: str, scopes: list[str]) -> str:
    """A token signed with the key in `keys_dir` (created first when there is none).

    API processes verify it when started with STELLA_ORCH_KEYS_DIR set to the same directory.
    """
    if not keys_dir.is_dir() or not any(keys_dir.iterdir()):
        generate_key(keys_dir)
    return issue_token(
        keys_dir,
        subject="e2e",
        tenants=[tenant],
        scopes=scopes,
        audience=Settings().audience,
        ttl_seconds=3600,
    )
