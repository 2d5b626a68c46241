"""Kill -9 an SDK worker process mid-way: its leases lapse, another worker finishes the runs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from asyncio import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.register_assert_rewrite("served_api")

from served_api import BASE, TENANT, served  # noqa: E402

from stellaorch.plugins.queue_task import task_hub_of  # noqa: E402
from stellaorch.sdk import TaskContext, Worker, task  # noqa: E402

RUNS = 30
MODULE = """
import asyncio
from pathlib import Path
from stellaorch.sdk import Worker, task

DONE = Path(__file__).with_name("done.log")


@task("fault-step")
async def fault_step(ctx, params):
    await asyncio.sleep(0.1)
    with DONE.open("a") as out:
        out.write(f"{ctx.run_id} {ctx.step_id}\\n")
    return {"by": "first"}


worker = Worker([fault_step], concurrency=4, wait_seconds=1.0)
"""


@task("fault-step")
async def second_step(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """The surviving worker's handler: quick."""
    await asyncio.sleep(0.01)
    return {"by": "second"}


async def test_sigkill_mid_batch_leases_lapse_and_another_worker_finishes(tmp_path: Path) -> None:
    (tmp_path / "faultmod.py").write_text(textwrap.dedent(MODULE))
    async with served(tmp_path, task_lease_ttl_seconds=1.0, poll_interval_seconds=0.05) as s:
        s.orchestrator.start_worker()
        headers = {
            "Authorization": f"Bearer {s.token()}",
            "X-Stella-Tenant": TENANT,
            "X-Stella-Operator-Reason": "fault test",
        }
        steps = [{"id": i, "plugin": "queue", "with": {"task": "fault-step"}} for i in "ab"]
        dag = {"dagId": "chain", "version": 1, "steps": steps, "edges": [{"from": "a", "to": "b"}]}
        async with httpx.AsyncClient(base_url=s.url + BASE, headers=headers) as client:
            assert (await client.post("/dags", json=dag)).status_code in (200, 201)
            run_ids = []
            for _ in range(RUNS):
                started = await client.post("/runs", json={"dagId": "chain", "inputs": {}})
                run_ids.append(started.json()["runId"])
            token = s.token(("orchestrator:worker",))
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
                "STELLA_API_URL": s.url,
                "STELLA_TOKEN": token,
                "STELLA_TENANT": TENANT,
            }
            code = "from stellaorch.cli.main import app; app()"
            first = await asyncio.create_subprocess_exec(
                *[sys.executable, "-c", code, "orch", "worker", "run", "faultmod:worker"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            done = tmp_path / "done.log"
            try:
                for _ in range(1000):  # up to 20 s
                    if _lines(done) >= 8:
                        break
                    await asyncio.sleep(0.02)
                assert _lines(done) >= 8, "the first worker never got going"
            finally:
                first.send_signal(signal.SIGKILL)
                await asyncio.wait_for(first.wait(), 10)
            assert _lines(done) < 2 * RUNS, "killed too late to leave work behind"
            hub = task_hub_of(s.orchestrator.plugins)
            assert hub is not None and hub.leased >= 1  # the dead worker's leases, not lapsed yet
            survivor = Worker(
                [second_step],
                url=s.url,
                token=token,
                tenant=TENANT,
                concurrency=8,
                wait_seconds=1.0,
            )
            serving = asyncio.create_task(survivor.serve())
            try:
                for run_id in run_ids:
                    assert await _ended(client, run_id) == "completed", run_id
            finally:
                survivor.stop()
                await asyncio.wait_for(serving, 10)
            by_second = 0
            for run_id in run_ids:
                for step_id in "ab":
                    view = (await client.get(f"/runs/{run_id}/steps/{step_id}")).json()
                    wins = [a for a in view["attempts"] if a["status"] == "succeeded"]
                    assert len(wins) == 1, view
                    by_second += view["outputs"]["by"] == "second"
                report = await s.orchestrator.runs.verify(TENANT, run_id)
                assert report.ok, report
            assert by_second >= 1  # the survivor really took over lapsed or untouched work
        await s.orchestrator.stop_worker()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _ended(client: httpx.AsyncClient, run_id: str, within: float = 20.0) -> str:
    deadline = time.monotonic() + within
    status = "unknown"
    while time.monotonic() < deadline:
        status = (await client.get(f"/runs/{run_id}")).json()["status"]
        if status in ("completed", "failed", "cancelled"):
            return status
        await asyncio.sleep(0.05)
    return status
