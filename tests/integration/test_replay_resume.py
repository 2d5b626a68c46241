"""Replay after a rollback: onto the enabled version, resumed from the failed step."""

from __future__ import annotations

import json

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"
CODE = "LOADER_SCHEMA_MISMATCH"
EXTRACT = {"id": "extract", "plugin": "noop", "with": {"outputs": {"rows": 3}}}
REPORT = {"id": "report", "plugin": "noop", "with": {"outputs": {"sent": True}}}
EDGES = [("extract", "load"), ("load", "report")]
GOOD_LOAD = {
    "id": "load",
    "plugin": "noop",
    "with": {"outputs": {"loaded": "${steps.extract.outputs.rows}"}},
}
BAD_LOAD = {"id": "load", "plugin": "fail@1", "with": {"code": CODE}}


async def broken_release(api: Api, runs: int = 3) -> list[str]:
    """etl v1 good, v2 whose load fails, run three times on v2 (all fail)."""
    await api.publish(A, spec("etl", [EXTRACT, GOOD_LOAD, REPORT], EDGES, version=1))
    await api.publish(A, spec("etl", [EXTRACT, BAD_LOAD, REPORT], EDGES, version=2))
    api.start_worker()
    ids = [(await api.start(A, "etl", {"n": i}))["runId"] for i in range(runs)]
    for run_id in ids:
        assert await api.wait(A, run_id) == "failed"
    return ids


async def rollback(api: Api) -> None:
    url = f"{BASE}/dags/etl:rollback"
    response = await api.client.post(url, json={"to": "1"}, headers=api.headers(A))
    assert response.status_code == 200, response.text


async def entries(api: Api, run_id: str) -> list[dict]:
    rows = await api.sql("SELECT body FROM ledger_entries WHERE run_id = :r ORDER BY seq", r=run_id)
    return [json.loads(r["body"]) for r in rows]


async def test_deadletter_replay_after_rollback_resumes_on_the_enabled_version(api: Api) -> None:
    ids = await broken_release(api)
    await rollback(api)
    url = f"{BASE}/deadletter/{CODE}:replay"
    body = {"reason": "after rollback", "resume": True}
    response = await api.client.post(url, json=body, headers=api.headers(A))
    assert response.status_code == 201, response.text
    replays = response.json()["items"]
    assert sorted(r["replayOf"] for r in replays) == sorted(ids)
    assert {r["dagVersion"] for r in replays} == {"1"}
    for replay in replays:
        assert await api.wait(A, replay["runId"]) == "completed"
        run = await api.get_json(A, f"/runs/{replay['runId']}")
        steps = {s["stepId"]: s for s in run["steps"]}
        assert steps["extract"]["status"] == "succeeded"
        assert steps["extract"]["attempts"] == []  # kept, never executed again
        assert [len(steps[s]["attempts"]) for s in ("load", "report")] == [1, 1]
        assert steps["load"]["outputs"] == {"loaded": 3}  # the reused outputs flow on
        ledger = await entries(api, replay["runId"])
        reused = [e for e in ledger if e["type"] == "step.reused"]
        assert [(e["stepId"], e["data"]["reusedFrom"]) for e in reused] == [
            ("extract", replay["replayOf"])
        ]
        assert not [e for e in ledger if e["type"] == "step.running" and e["stepId"] == "extract"]
        created = ledger[0]["data"]
        assert (created["reason"], created["replayOf"]) == ("after rollback", replay["replayOf"])


async def test_run_replay_onto_a_named_version_from_the_start_runs_every_step(api: Api) -> None:
    [run_id] = await broken_release(api, runs=1)
    await rollback(api)
    body = {"reason": "fixed", "version": 1}
    response = await api.client.post(
        f"{BASE}/runs/{run_id}:replay", json=body, headers=api.headers(A)
    )
    assert response.status_code == 201, response.text
    replay = response.json()
    assert (replay["dagVersion"], replay["replayOf"]) == ("1", run_id)
    assert await api.wait(A, replay["runId"]) == "completed"
    types = [e["type"] for e in await entries(api, replay["runId"])]
    assert "step.reused" not in types
    assert types.count("step.running") == 3


async def test_resume_reruns_a_step_whose_params_changed_and_everything_after_it(api: Api) -> None:
    [run_id] = await broken_release(api, runs=1)
    changed = {"id": "extract", "plugin": "noop", "with": {"outputs": {"rows": 4}}}
    await api.publish(A, spec("etl", [changed, GOOD_LOAD, REPORT], EDGES, version=3))
    body = {"reason": "new extract", "version": "3", "resume": True}
    response = await api.client.post(
        f"{BASE}/runs/{run_id}:replay", json=body, headers=api.headers(A)
    )
    assert response.status_code == 201, response.text
    new_id = response.json()["runId"]
    assert await api.wait(A, new_id) == "completed"
    types = [e["type"] for e in await entries(api, new_id)]
    assert "step.reused" not in types and types.count("step.running") == 3


async def test_replay_onto_a_disabled_version_is_refused(api: Api) -> None:
    [run_id] = await broken_release(api, runs=1)
    await rollback(api)
    body = {"reason": "x", "version": "2"}
    response = await api.client.post(
        f"{BASE}/runs/{run_id}:replay", json=body, headers=api.headers(A)
    )
    assert response.status_code == 409
    assert assert_envelope(response)["code"] == "DAG_VERSION_DISABLED"


async def test_another_tenant_cannot_replay_or_resume_the_run(api: Api) -> None:
    [run_id] = await broken_release(api, runs=1)
    await rollback(api)
    body = {"reason": "x", "resume": True}
    response = await api.client.post(
        f"{BASE}/runs/{run_id}:replay", json=body, headers=api.headers(B)
    )
    assert response.status_code == 404
    assert assert_envelope(response)["code"] == "RUN_NOT_FOUND"
    response = await api.client.post(
        f"{BASE}/deadletter/{CODE}:replay", json=body, headers=api.headers(B)
    )
    assert response.status_code == 404
    assert len(await api.sql("SELECT run_id FROM runs")) == 1
