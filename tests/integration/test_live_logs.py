"""Live step logs: followed while the step runs, kept whatever the attempt's end, redacted."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures", "served_api")
pytest_plugins = ("api_fixtures",)
from api_fixtures import BASE, Api, MakeApi, spec  # noqa: E402
from served_api import TENANT, served  # noqa: E402

from stellaorch.observability.secret_values import REDACTED  # noqa: E402

A = "acme"
SECRET = "live-S3cret-value-4711"
FAST = {"sandbox": "off", "log_flush_seconds": 0.1}


def script(code: str, **extra: Any) -> dict[str, Any]:
    """A one-step DAG running `code` with the test's Python."""
    step = {"id": "s", "plugin": "script", "with": {"command": [sys.executable, "-c", code]}}
    return spec("live", [{**step, **extra}])


async def started(api: Api, document: dict[str, Any]) -> str:
    """Publish, start a worker and a run; the run's id."""
    await api.publish(A, document)
    api.start_worker()
    return str((await api.start(A, "live"))["runId"])


async def chunks(api: Api, run_id: str) -> list[str]:
    """The stored live chunks of step `s`, in order."""
    rows = await api.sql(
        "SELECT content FROM attempt_log_chunks WHERE run_id = :r ORDER BY attempt, seq", r=run_id
    )
    return [str(r["content"]) for r in rows]


async def until_stored(api: Api, run_id: str, text: str = "") -> str:
    """Wait (up to 10 s) until the run's live chunks hold `text` (or anything); them joined."""
    for _ in range(200):
        stored = "".join(await chunks(api, run_id))
        if stored and text in stored:
            return stored
        await asyncio.sleep(0.05)
    raise AssertionError(f"no live chunk with {text!r}")


async def log_lines(api: Api, run_id: str, attempt: int | None = None) -> list[str]:
    """The step's log lines over HTTP."""
    query = f"?attempt={attempt}" if attempt else ""
    body = await api.get_json(A, f"/runs/{run_id}/steps/s/logs{query}")
    return [item["line"] for item in body["items"]]


PRINT_SLEEP_PRINT = "import time; print('first', flush=True); time.sleep(2); print('second')"
# Room for the CLI process to start on a loaded machine before the step ends.
SLOW_SECOND = PRINT_SLEEP_PRINT.replace("sleep(2)", "sleep(6)")


async def test_follow_yields_the_first_line_before_the_step_ends(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    run_id = await started(api, script(PRINT_SLEEP_PRINT))
    lines = await api.orchestrator.runs.logs.follow(A, run_id, "s")
    async with asyncio.timeout(10):
        first = await anext(lines)
        running = await api.sql("SELECT ended_us FROM attempts WHERE run_id = :r", r=run_id)
        rest = [line async for line in lines]
    assert first == {"attempt": 1, "line": "first"}
    assert running and running[0]["ended_us"] is None  # the attempt was still running
    assert rest == [{"attempt": 1, "line": "second"}]


async def test_follow_over_http_is_ndjson_ending_with_the_attempt(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    run_id = await started(api, script("print('one'); print('two')"))
    assert await api.wait(A, run_id) == "completed"
    response = await api.client.get(
        f"{BASE}/runs/{run_id}/steps/s/logs?follow=true&attempt=1", headers=api.headers(A)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    items = [json.loads(line) for line in response.text.splitlines()]
    assert items == [{"attempt": 1, "line": "one"}, {"attempt": 1, "line": "two"}]


async def test_a_stored_log_replaces_the_attempts_live_chunks(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    code = "import time; print('first', flush=True); time.sleep(0.5); print('second')"
    run_id = await started(api, script(code))
    assert "first" in await until_stored(api, run_id)
    assert await api.wait(A, run_id) == "completed"
    await api.stop_worker()
    assert await chunks(api, run_id) == []  # the whole log is stored; the copy is gone
    assert await log_lines(api, run_id) == ["first", "second"]


async def test_a_cancelled_attempt_keeps_what_it_printed(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    code = "import time; print('before cancel', flush=True); time.sleep(60)"
    run_id = await started(api, script(code))
    await until_stored(api, run_id)
    response = await api.client.post(f"{BASE}/runs/{run_id}:cancel", headers=api.headers(A))
    assert response.status_code == 200, response.text
    assert await api.wait(A, run_id) == "cancelled"
    await api.stop_worker()  # the attempt's task has wound down and written its rest
    assert await log_lines(api, run_id) == ["before cancel"]
    attempts = (await api.get_json(A, f"/runs/{run_id}/steps/s"))["attempts"]
    assert attempts[0]["status"] == "cancelled"


async def test_a_timed_out_attempt_keeps_what_it_printed(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    code = "import time; print('working', flush=True); time.sleep(60)"
    run_id = await started(api, script(code, timeoutSeconds=1))
    assert await api.wait(A, run_id) == "failed"
    await api.stop_worker()
    assert await log_lines(api, run_id, attempt=1) == ["working"]


async def test_a_secret_printed_live_is_redacted_even_split_across_chunks(
    make_api: MakeApi,
) -> None:
    api = await make_api(**FAST)
    body = {"value": SECRET, "reason": "test"}
    put = await api.client.put(
        f"{BASE}/secrets/api-key", json=body, headers=api.headers(A, reason=None)
    )
    assert put.status_code == 200, put.text
    # Half the value, a pause of several flush intervals, the other half: then it lives on.
    code = (
        "import os, sys, time; s = os.environ['S']; h = len(s) // 2\n"
        "sys.stdout.write('token ' + s[:h]); sys.stdout.flush(); time.sleep(0.6)\n"
        "print(s[h:] + ' end', flush=True); time.sleep(60)"
    )
    document = script(code)
    document["steps"][0]["with"]["env"] = {"S": "${secrets.api-key}"}
    run_id = await started(api, document)
    stored = await until_stored(api, run_id, "end")
    assert SECRET[: len(SECRET) // 2] not in stored
    assert stored == f"token {REDACTED} end\n"
    await api.client.post(f"{BASE}/runs/{run_id}:cancel", headers=api.headers(A))


async def test_live_log_is_bounded_in_total_and_per_chunk(make_api: MakeApi) -> None:
    api = await make_api(**FAST, max_log_bytes=1024, log_chunk_bytes=1024)
    code = "import time; print('x' * 100_000, flush=True); time.sleep(60)"
    run_id = await started(api, script(code, timeoutSeconds=2))
    assert await api.wait(A, run_id) == "failed"
    await api.stop_worker()
    stored = await chunks(api, run_id)
    assert all(len(c) <= 1024 for c in stored)
    assert 1024 <= len("".join(stored)) <= 1024 + 100
    assert (await log_lines(api, run_id))[-1].startswith("[stella] log truncated")


async def test_a_step_waiting_on_backoff_shows_its_next_attempt_time(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    retry = {"maxAttempts": 2, "backoff": {"initialMs": 600_000, "maxMs": 600_000}}
    run_id = await started(api, script("raise SystemExit(1)", retry=retry))
    async with asyncio.timeout(10):
        while True:
            step = (await api.get_json(A, f"/runs/{run_id}"))["steps"][0]
            if step.get("nextAttemptUtc"):
                break
            await asyncio.sleep(0.05)
    assert step["status"] == "queued" and step["attempts"][0]["status"] == "failed"
    assert step["nextAttemptUtc"] > step["attempts"][0]["endedUtc"]
    single = await api.get_json(A, f"/runs/{run_id}/steps/s")
    assert single["nextAttemptUtc"] == step["nextAttemptUtc"]


async def test_another_tenants_step_logs_are_not_found(make_api: MakeApi) -> None:
    api = await make_api(**FAST)
    run_id = await started(api, script("print('mine')"))
    assert await api.wait(A, run_id) == "completed"
    for query in ("", "?follow=true"):
        response = await api.client.get(
            f"{BASE}/runs/{run_id}/steps/s/logs{query}", headers=api.headers("globex")
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "RUN_NOT_FOUND"


async def test_follow_over_a_real_socket_streams_the_first_line_before_the_step_ends(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, **FAST, require_dag_signatures=False) as api:
        headers = {"Authorization": f"Bearer {api.token()}", "X-Stella-Tenant": TENANT}
        async with httpx.AsyncClient(base_url=api.url + BASE, headers=headers) as client:
            reason = {"X-Stella-Operator-Reason": "test"}
            published = await client.post("/dags", json=script(PRINT_SLEEP_PRINT), headers=reason)
            assert published.status_code in (200, 201), published.text
            api.orchestrator.start_worker()
            run = (await client.post("/runs", json={"dagId": "live", "inputs": {}})).json()
            path = f"/runs/{run['runId']}/steps/s/logs"
            async with (
                asyncio.timeout(15),
                client.stream("GET", path, params={"follow": "true"}, timeout=None) as response,
            ):
                lines = response.aiter_lines()
                first = json.loads(await anext(lines))
                status = (await client.get(f"/runs/{run['runId']}")).json()["status"]
                rest = [json.loads(line) async for line in lines if line]
            await api.orchestrator.stop_worker()
    assert first["line"] == "first" and status == "running"
    assert [item["line"] for item in rest] == ["second"]


async def test_cli_run_logs_follow_prints_the_first_line_before_the_step_ends(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, **FAST, require_dag_signatures=False) as api:
        headers = {"Authorization": f"Bearer {api.token()}", "X-Stella-Tenant": TENANT}
        async with httpx.AsyncClient(base_url=api.url + BASE, headers=headers) as client:
            reason = {"X-Stella-Operator-Reason": "test"}
            await client.post("/dags", json=script(SLOW_SECOND), headers=reason)
            api.orchestrator.start_worker()
            run = (await client.post("/runs", json={"dagId": "live", "inputs": {}})).json()
            cli = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("stella")),
                *("orch", "run", "logs", "--run-id", run["runId"], "--step", "s", "--follow"),
                *("--api-url", api.url, "--token", api.token(), "--tenant", TENANT),
                stdout=asyncio.subprocess.PIPE,
            )
            assert cli.stdout is not None
            async with asyncio.timeout(20):
                first = await cli.stdout.readline()
                status = (await client.get(f"/runs/{run['runId']}")).json()["status"]
                rest = await cli.stdout.read()
                assert await cli.wait() == 0
            await api.orchestrator.stop_worker()
    assert (first, status) == (b"first\n", "running")
    assert rest == b"second\n"


async def test_cli_run_logs_without_a_step_prints_every_started_step_in_dag_order(
    tmp_path: Path,
) -> None:
    steps = [
        {
            "id": "first",
            "plugin": "script",
            "with": {"command": [sys.executable, "-c", "print(1)"]},
        },
        {
            "id": "second",
            "plugin": "script",
            "with": {"command": [sys.executable, "-c", "print(2)"]},
        },
    ]
    async with served(tmp_path, **FAST, require_dag_signatures=False) as api:
        headers = {"Authorization": f"Bearer {api.token()}", "X-Stella-Tenant": TENANT}
        async with httpx.AsyncClient(base_url=api.url + BASE, headers=headers) as client:
            reason = {"X-Stella-Operator-Reason": "test"}
            published = await client.post(
                "/dags", json=spec("two", steps, [("first", "second")]), headers=reason
            )
            assert published.status_code in (200, 201), published.text
            api.orchestrator.start_worker()
            run = (await client.post("/runs", json={"dagId": "two", "inputs": {}})).json()
            for _ in range(400):
                if (await client.get(f"/runs/{run['runId']}")).json()["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
            cli = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("stella")),
                *("orch", "run", "logs", "--run-id", run["runId"], "-o", "json"),
                *("--api-url", api.url, "--token", api.token(), "--tenant", TENANT),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await cli.communicate()
            await api.orchestrator.stop_worker()
    assert cli.returncode == 0
    items = json.loads(out)["items"]
    assert [(i["stepId"], i["attempt"], i["line"]) for i in items] == [
        ("first", 1, "1"),
        ("second", 1, "2"),
    ]
