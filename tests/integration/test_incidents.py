"""The runbook's incidents played end to end over HTTP: queue backlog and repeated failures.

(Scheduler runaway is played in test_schedules_api.py: disable the version, clear the
triggers, the queue drains.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

A = "acme"


async def queue(api: Api) -> dict[str, Any]:
    return dict((await api.get_json(A, "/queues"))["items"][0])


async def test_runbook_queue_backlog_pause_drain_oldest_first(make_api: Any) -> None:
    api: Api = await make_api(worker_concurrency=1)
    await api.publish(A, spec("job", [{"id": "s", "plugin": "noop"}]))
    ids = [(await api.start(A, "job", {"i": i}))["runId"] for i in range(40)]
    assert (await queue(api))["depth"] == 40  # check queue depth
    headers = api.headers(A, reason="INC-1 backlog")
    await api.client.post(f"{BASE}/queues/{A}:pause", headers=headers)
    api.start_worker()
    await asyncio.sleep(0.2)
    assert (await queue(api))["depth"] == 40  # paused: nothing leased
    await api.client.post(f"{BASE}/queues/{A}:resume", headers=headers)
    assert (await api.client.post(f"{BASE}/queues/{A}:drain", headers=headers)).status_code == 200
    refused = await api.client.post(f"{BASE}/runs", json={"dagId": "job"}, headers=headers)
    assert assert_envelope(refused)["code"] == "QUEUE_DRAINING"
    for _ in range(200):
        if (await queue(api))["depth"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (await queue(api))["depth"] == 0
    for run_id in ids:
        assert await api.wait(A, run_id) == "completed"
    order = await api.sql(
        "SELECT run_id FROM ledger_entries WHERE entry_type = 'run.started' ORDER BY id"
    )
    assert [r["run_id"] for r in order] == ids  # oldest first
    assert len(await api.sql("SELECT run_id FROM runs")) == 40


async def test_runbook_repeated_failures_find_the_code_compare_and_roll_back(api: Api) -> None:
    good = spec("etl", [{"id": "load", "plugin": "noop"}], version=1)
    bad = spec(
        "etl", [{"id": "load", "plugin": "fail@1", "with": {"code": "SCHEMA_DRIFT"}}], version=2
    )
    await api.publish(A, good)
    api.start_worker()
    good_run = (await api.start(A, "etl", {"day": 1}))["runId"]
    assert await api.wait(A, good_run) == "completed"
    await api.publish(A, bad)
    bad_runs = [(await api.start(A, "etl", {"day": d}))["runId"] for d in (2, 3)]
    for run_id in bad_runs:
        assert await api.wait(A, run_id) == "failed"

    # Inspect the dead letter and the run's ledger for error.code.
    group = (await api.get_json(A, "/deadletter"))["items"][0]
    assert group["code"] == "SCHEMA_DRIFT"
    assert group["dagVersions"] == [{"dagId": "etl", "dagVersion": "2"}]
    bodies = await api.sql(
        "SELECT body FROM ledger_entries WHERE run_id = :r ORDER BY seq", r=bad_runs[0]
    )
    assert any("SCHEMA_DRIFT" in json.dumps(json.loads(b["body"])) for b in bodies)

    # Compare inputsHash and plugin version of a good and a bad run.
    good_view = await api.get_json(A, f"/runs/{good_run}")
    bad_view = await api.get_json(A, f"/runs/{bad_runs[0]}")
    assert good_view["inputsHash"] != bad_view["inputsHash"]  # other day, other inputs
    plugins = {
        v: (await api.get_json(A, f"/dags/etl/{v}"))["spec"]["steps"][0]["plugin"]
        for v in ("1", "2")
    }
    assert plugins == {"1": "noop", "2": "fail@1"} and group["plugins"] == ["fail@1"]

    # A regression: roll back to the good version; new runs succeed.
    rolled = await api.client.post(
        f"{BASE}/dags/etl:rollback", json={"to": 1}, headers=api.headers(A, reason="INC-2")
    )
    assert rolled.status_code == 200 and rolled.json()["disabled"] == ["2"]
    fixed = await api.start(A, "etl", {"day": 4})
    assert fixed["dagVersion"] == "1"
    assert await api.wait(A, fixed["runId"]) == "completed"
