"""The Python SDK against a real API server: typed handlers, progress, errors, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

pytest.register_assert_rewrite("served_api")

from served_api import BASE, TENANT, Served, served  # noqa: E402

from stellaorch.sdk import Fatal, Retryable, TaskContext, Worker, task  # noqa: E402

WORKER_SCOPE = ("orchestrator:worker",)


class Numbers(BaseModel):
    """Params of the test tasks."""

    n: int


class Doubled(BaseModel):
    """Result of `double`."""

    n: int


@task("double")
async def double(ctx: TaskContext, params: Numbers) -> Doubled:
    """Async, typed: report progress, log, double."""
    ctx.progress(0.5, "halfway")
    ctx.log(f"doubling {params.n}")
    return Doubled(n=params.n * 2)


@task("add-one")
def add_one(ctx: TaskContext, params: Numbers) -> dict[str, Any]:
    """Plain function (thread pool), untyped result."""
    return {"n": params.n + 1, "traceparent": ctx.traceparent}


@task("refuse")
async def refuse(ctx: TaskContext, params: dict[str, Any]) -> None:
    """Fails with the error its params choose."""
    if params.get("retryable"):
        raise Retryable("try later", code="BUSY_NOW")
    raise Fatal("never", code="BAD_IMAGE")


entered: dict[str, float] = {}
stopped: dict[str, float] = {}


@task("hang-async")
async def hang_async(ctx: TaskContext, params: dict[str, Any]) -> None:
    """Hangs until cancelled; records when."""
    entered["async"] = time.monotonic()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        stopped["async"] = time.monotonic()
        raise


@task("hang-sync")
def hang_sync(ctx: TaskContext, params: dict[str, Any]) -> None:
    """Plain code polling the cancel flag."""
    entered["sync"] = time.monotonic()
    deadline = time.monotonic() + 20
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped["sync"] = time.monotonic()


async def until(condition: Callable[[], bool], within: float) -> None:
    """Poll `condition` every 20 ms for up to `within` seconds."""
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)


def step(step_id: str, name: str, **params: Any) -> dict[str, Any]:
    """A queue step."""
    return {"id": step_id, "plugin": "queue", "with": {"task": name, **params}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Served, httpx.AsyncClient]]:
    """A served API with its engine worker, and an admin client."""
    async with served(tmp_path, task_lease_ttl_seconds=2.0, poll_interval_seconds=0.05) as s:
        s.orchestrator.start_worker()
        headers = {
            "Authorization": f"Bearer {s.token()}",
            "X-Stella-Tenant": TENANT,
            "X-Stella-Operator-Reason": "sdk test",
        }
        async with httpx.AsyncClient(base_url=s.url + BASE, headers=headers) as client:
            yield s, client
        await s.orchestrator.stop_worker()


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Serve in the background; stop and wait on exit."""
    job = asyncio.create_task(worker.serve())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(job, 15)


def sdk_worker(s: Served, *tasks: Any, **options: Any) -> Worker:
    """A worker with a worker-scoped token."""
    token = s.token(WORKER_SCOPE)
    return Worker(list(tasks), url=s.url, token=token, tenant=TENANT, wait_seconds=1.0, **options)


async def publish_and_start(client: httpx.AsyncClient, dag: dict[str, Any]) -> str:
    """Publish the DAG and start a run of it."""
    published = await client.post("/dags", json={"version": 1, "edges": [], **dag})
    assert published.status_code in (200, 201), published.text
    started = await client.post("/runs", json={"dagId": dag["dagId"], "inputs": {}})
    assert started.status_code in (200, 201), started.text
    run_id: str = started.json()["runId"]
    return run_id


async def wait_status(client: httpx.AsyncClient, run_id: str, within: float = 10.0) -> Any:
    """Poll the run until it ends; its view."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        view = (await client.get(f"/runs/{run_id}")).json()
        if view["status"] in ("completed", "failed", "cancelled"):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end: {view['status']}")


async def test_async_and_plain_typed_handlers_chain_their_outputs(
    server: tuple[Served, httpx.AsyncClient],
) -> None:
    s, client = server
    dag = {
        "dagId": "numbers",
        "steps": [step("a", "double", n=3), step("b", "add-one", n="${steps.a.outputs.n}")],
        "edges": [{"from": "a", "to": "b"}],
    }
    async with running(sdk_worker(s, double, add_one, concurrency=4)):
        run_id = await publish_and_start(client, dag)
        view = await wait_status(client, run_id)
    assert view["status"] == "completed", view
    b = (await client.get(f"/runs/{run_id}/steps/b")).json()
    assert b["outputs"]["n"] == 7 and b["outputs"]["traceparent"].startswith("00-")
    logs = (await client.get(f"/runs/{run_id}/steps/a/logs")).text
    assert "doubling 3" in logs


async def test_retryable_and_fatal_become_typed_step_errors(
    server: tuple[Served, httpx.AsyncClient],
) -> None:
    s, client = server
    async with running(sdk_worker(s, refuse)):
        fatal = await publish_and_start(client, {"dagId": "f", "steps": [step("x", "refuse")]})
        retry = await publish_and_start(
            client, {"dagId": "r", "steps": [step("x", "refuse", retryable=True)]}
        )
        await wait_status(client, fatal)
        await wait_status(client, retry)
    fatal_error = (await client.get(f"/runs/{fatal}/steps/x")).json()["attempts"][-1]["error"]
    retry_error = (await client.get(f"/runs/{retry}/steps/x")).json()["attempts"][-1]["error"]
    assert (fatal_error["code"], fatal_error["retryable"]) == ("BAD_IMAGE", False)
    assert (retry_error["code"], retry_error["retryable"]) == ("BUSY_NOW", True)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_run_cancel_reaches_the_handler_within_a_second(
    server: tuple[Served, httpx.AsyncClient], kind: str
) -> None:
    s, client = server
    entered.pop(kind, None)
    stopped.pop(kind, None)
    handler = hang_async if kind == "async" else hang_sync
    async with running(sdk_worker(s, handler)):
        run_id = await publish_and_start(
            client, {"dagId": f"hang-{kind}", "steps": [step("x", f"hang-{kind}")]}
        )
        await until(lambda: kind in entered, 10)
        cancelled_at = time.monotonic()
        cancel = await client.post(f"/runs/{run_id}:cancel", json={"reason": "test"})
        assert cancel.status_code in (200, 202), cancel.text
        await until(lambda: kind in stopped, 5)
    assert kind in stopped, "the handler never learned of the cancel"
    assert stopped[kind] - cancelled_at < 1.0
    assert (await wait_status(client, run_id))["status"] == "cancelled"


async def test_stop_lets_a_running_handler_finish_and_report(
    server: tuple[Served, httpx.AsyncClient],
) -> None:
    s, client = server
    release = threading.Event()

    @task("slow")
    def slow(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
        release.wait(5)
        return {"done": True}

    worker = sdk_worker(s, slow)
    job = asyncio.create_task(worker.serve())
    run_id = await publish_and_start(client, {"dagId": "slow", "steps": [step("x", "slow")]})
    await until(lambda: bool(worker._running), 10)
    worker.stop()  # as SIGTERM does: stop claiming, let the attempt finish
    release.set()
    await asyncio.wait_for(job, 10)
    assert worker.completed == 1
    assert (await wait_status(client, run_id))["status"] == "completed"
