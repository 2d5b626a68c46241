"""The audit log over HTTP: pages by id, action filter, NDJSON export, admin readers only."""

from __future__ import annotations

import json

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, spec  # noqa: E402

A, B = "acme", "globex"


async def actions(api: Api) -> None:
    await api.publish(A, spec("etl", [{"id": "s", "plugin": "noop"}]))
    for action in ("pause", "resume", "drain", "resume"):
        await api.client.post(f"{BASE}/queues/{A}:{action}", headers=api.headers(A))


async def test_audit_pages_in_id_order_with_an_action_filter(api: Api) -> None:
    await actions(api)
    first = await api.get_json(A, "/audit?page_size=3")
    assert [e["action"] for e in first["items"]] == ["dag.publish", "queue.pause", "queue.resume"]
    rest = await api.get_json(A, f"/audit?page_token={first['nextPageToken']}")
    assert [e["action"] for e in rest["items"]] == ["queue.drain", "queue.resume"]
    assert rest["nextPageToken"] is None
    only = await api.get_json(A, "/audit?action=queue.resume")
    assert len(only["items"]) == 2
    entry = only["items"][0]
    assert (entry["actor"], entry["reason"], entry["tenant"]) == ("alice", "integration test", A)
    assert (await api.get_json(B, "/audit"))["items"] == []


async def test_audit_export_is_ndjson_in_id_order(api: Api) -> None:
    await actions(api)
    response = await api.client.get(f"{BASE}/audit/export", headers=api.headers(A))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 5
    assert [e["id"] for e in lines] == sorted(e["id"] for e in lines)


async def test_audit_needs_the_admin_scope(api: Api) -> None:
    for path in ("/audit", "/audit/export"):
        response = await api.client.get(f"{BASE}{path}", headers=api.headers(A, scopes=(READ,)))
        assert response.status_code == 403


async def test_a_replay_records_its_reason_and_actor_in_ledger_audit_and_export(api: Api) -> None:
    await api.publish(A, spec("etl", [{"id": "s", "plugin": "noop"}]))
    original = await api.start(A, "etl")
    headers = {**api.headers(A), "X-Stella-Operator-Ticket": "INC-42"}
    response = await api.client.post(
        f"{BASE}/runs/{original['runId']}:replay", json={"reason": "loader fixed"}, headers=headers
    )
    assert response.status_code == 201, response.text
    replay_id = response.json()["runId"]

    [created] = await api.sql(
        "SELECT body FROM ledger_entries WHERE run_id = :r AND seq = 1", r=replay_id
    )
    data = json.loads(created["body"])["data"]
    assert (data["reason"], data["actor"], data["replayOf"]) == (
        "loader fixed",
        "alice",
        original["runId"],
    )

    [entry] = (await api.get_json(A, "/audit?action=run.replay"))["items"]
    assert (entry["actor"], entry["reason"], entry["ticket"], entry["target"]) == (
        "alice",
        "loader fixed",
        "INC-42",
        replay_id,
    )

    api.start_worker()
    assert await api.wait(A, replay_id) == "completed"
    export = await api.client.get(
        f"{BASE}/ledger/export",
        params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        headers=api.headers(A),
    )
    assert export.status_code == 200, export.text
    lines = [json.loads(raw) for raw in export.text.splitlines()]
    [line] = [doc for doc in lines if doc.get("runId") == replay_id]
    assert line["events"][0]["data"]["reason"] == "loader fixed"
