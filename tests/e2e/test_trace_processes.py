"""One trace across processes: an API process and a worker process write their span files,
and together the spans of a 3-step run with a retry make one tree under the caller's span."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from services import api_token, service

BASE = "/api/v1/orchestrator"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
ENV = {
    "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05",
    "STELLA_ORCH_INLINE_SCRIPTS": "true",
    "STELLA_ORCH_REQUIRE_DAG_SIGNATURES": "false",  # unsigned test DAG
}
DAG = {
    "dagId": "traced",
    "version": 1,
    "steps": [
        {"id": "first", "plugin": "noop"},
        {
            "id": "flaky",
            "plugin": "fail",
            "with": {"retryable": True, "code": "FLAKY", "untilAttempt": 2},
            "retry": {"maxAttempts": 3, "backoff": {"initialMs": 10, "factor": 2, "jitter": 0}},
        },
        {"id": "show", "plugin": "script", "with": {"command": ["sh", "-c", "echo $TRACEPARENT"]}},
    ],
    "edges": [{"from": "first", "to": "flaky"}, {"from": "flaky", "to": "show"}],
}


def spans_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_spans_of_the_api_and_the_worker_form_one_tree(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    token = api_token(keys, "acme", ["orchestrator:admin"])
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Stella-Tenant": "acme",
        "X-Stella-Operator-Reason": "e2e",
    }
    env = {**ENV, "STELLA_ORCH_KEYS_DIR": str(keys)}
    url = f"sqlite:///{tmp_path}/o.db"
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(service("api", url, tmp_path / "api.log", env))
        worker = await stack.enter_async_context(
            service("worker", url, tmp_path / "worker.log", env)
        )
        async with httpx.AsyncClient(base_url=f"{api.url}{BASE}", headers=headers) as client:
            published = await client.post("/dags", json=DAG)
            assert published.status_code == 201, published.text
            caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
            started = await client.post("/runs", json={"dagId": "traced"}, headers=caller)
            assert started.status_code == 201, started.text
            run_id = started.json()["runId"]
            deadline = time.monotonic() + 30
            while (await client.get(f"/runs/{run_id}")).json()["status"] != "completed":
                assert time.monotonic() < deadline, "the run did not complete"
                await asyncio.sleep(0.05)
            logs = (await client.get(f"/runs/{run_id}/steps/show/logs")).json()
        for part in (worker, api):  # a clean stop flushes the batched spans to the files
            part.proc.send_signal(signal.SIGTERM)
            assert await part.proc.wait() == 0

    api_spans = spans_in(tmp_path / "api.traces.ndjson")
    worker_spans = spans_in(tmp_path / "worker.traces.ndjson")
    [run_span] = [s for s in api_spans if s["name"] == "orchestrator.run"]
    [server] = [s for s in api_spans if s["spanId"] == run_span["parentSpanId"]]
    assert server["name"] == f"POST {BASE}/runs" and server["kind"] == "server"
    assert server["parentSpanId"] == CALLER_SPAN and server["traceId"] == CALLER_TRACE
    steps = [s for s in worker_spans if s["name"] == "orchestrator.step"]
    assert {s["traceId"] for s in steps} == {CALLER_TRACE}
    assert {s["parentSpanId"] for s in steps} == {run_span["spanId"]}
    assert all(s["service"] == "stella-orch-worker" for s in steps)
    attempts = sorted((s["attributes"]["stepId"], s["attributes"]["attempt"]) for s in steps)
    assert attempts == [("first", 1), ("flaky", 1), ("flaky", 2), ("show", 1)]
    [show] = [s for s in steps if s["attributes"]["stepId"] == "show"]
    assert [i["line"] for i in logs["items"]] == [f"00-{CALLER_TRACE}-{show['spanId']}-01"]
