"""`stella orch serve` killed with SIGKILL mid-run: a restart finishes the run exactly once.

The run is created from the test process straight on the SQLite file (no worker here); two
`serve` processes in turn do the work. The attempt that was running at the kill must come
back as `lost`, be retried, and every step must end with exactly one succeeded attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services import free_port

from stellaorch.engine.app import Orchestrator
from stellaorch.engine.requests import RunRequest
from stellaorch.settings import Settings

TENANT = "acme"
DAG_ID = "kill9"
STARTUP_SECONDS = 30
ROOT = Path(__file__).resolve().parents[2]


def kill9_spec() -> dict[str, Any]:
    """15 steps of `sleep 0.2`: start -> 5-way fan -> join -> 5-way fan -> join -> chain of 2."""
    fan_a = [f"a{i}" for i in range(1, 6)]
    fan_b = [f"b{i}" for i in range(1, 6)]
    ids = ["start", *fan_a, "join-a", *fan_b, "join-b", "tail1", "tail2"]
    edges = [("start", s) for s in fan_a] + [(s, "join-a") for s in fan_a]
    edges += [("join-a", s) for s in fan_b] + [(s, "join-b") for s in fan_b]
    edges += [("join-b", "tail1"), ("tail1", "tail2")]
    return {
        "dagId": DAG_ID,
        "version": 1,
        "steps": [{"id": s, "plugin": "sleep", "with": {"seconds": 0.2}} for s in ids],
        "edges": [{"from": a, "to": b} for a, b in edges],
    }


@asynccontextmanager
async def serving(dags: Path, url: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`stella orch serve` in a subprocess, ready for work; always killed and reaped after."""
    env = {
        **os.environ,
        "STELLA_ORCH_LEASE_TTL_SECONDS": "1",
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05",
        "PYTHONUNBUFFERED": "1",
        "STELLA_ORCH_TRACE_FILE": str(log.with_suffix(".traces.ndjson")),  # not a shared path
    }
    env.pop("STELLA_ORCH_CONFIG", None)
    command = ["-m", "stellaorch.cli.main", "orch", "serve", "--dags", str(dags)]
    command += ["--tenant", TENANT, "--db", url, "--port", str(free_port())]
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *command, stdout=out, stderr=out, env=env, cwd=ROOT
        )
    try:
        await wait_ready(proc, log)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def text_of(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_ready(proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    marker = f"ready: 1 DAG(s) for tenant {TENANT}"
    while marker not in text_of(log):
        assert proc.returncode is None, f"serve exited early:\n{text_of(log)}"
        assert time.monotonic() < deadline, f"serve not ready:\n{text_of(log)}"
        await asyncio.sleep(0.05)


async def until(probe: Any, within: float, what: str) -> Any:
    """Poll the async `probe` until it returns something truthy."""
    deadline = time.monotonic() + within
    while not (found := await probe()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)
    return found


def attempts_by_status(view: dict[str, Any], status: str) -> list[tuple[str, int]]:
    return [
        (step["stepId"], a["attempt"])
        for step in view["steps"]
        for a in step["attempts"]
        if a["status"] == status
    ]


async def test_run_survives_kill_9_of_serve(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.json").write_text(json.dumps(kill9_spec()))
    url = f"sqlite:///{tmp_path}/o.db"
    log = tmp_path / "serve.log"
    observer: Orchestrator | None = None
    try:
        async with serving(dags, url, log) as first:
            observer = Orchestrator.open(Settings(database_url=url))
            runs = observer.runs
            run_id = (await runs.create(RunRequest(TENANT, DAG_ID, {}))).run.run_id

            async def mid_fan_out() -> bool:
                view = await runs.get(TENANT, run_id)
                done = attempts_by_status(view, "succeeded")
                return len(done) >= 1 and len(attempts_by_status(view, "running")) >= 2

            await until(mid_fan_out, 20, "a step succeeded and a fan-out runs")
            first.kill()
            await first.wait()

        at_kill = await runs.get(TENANT, run_id)
        running_at_kill = attempts_by_status(at_kill, "running")
        assert at_kill["status"] == "running"

        async with serving(dags, url, log):

            async def ended() -> dict[str, Any] | None:
                view = await runs.get(TENANT, run_id)
                return view if view["status"] in {"completed", "failed", "cancelled"} else None

            final = await until(ended, 30, "the run ended after the restart")

        assert final["status"] == "completed", text_of(log)
        for step in final["steps"]:
            statuses = [a["status"] for a in step["attempts"]]
            assert statuses.count("succeeded") == 1, (step["stepId"], statuses)
            assert step["status"] == "succeeded"
        lost = attempts_by_status(final, "lost")
        if running_at_kill:
            assert sorted(lost) == sorted(running_at_kill)
        else:  # every running attempt finished between the probe and the kill
            assert attempts_by_status(at_kill, "succeeded")
        assert (await runs.verify(TENANT, run_id)).ok
    finally:
        if observer is not None:
            await observer.close()
