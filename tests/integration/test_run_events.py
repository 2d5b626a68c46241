"""A run's ledger entries over HTTP: chain order, paging, tenants."""

from __future__ import annotations

import itertools

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"
TWO = spec("etl", [{"id": "a", "plugin": "noop"}, {"id": "b", "plugin": "noop"}], [("a", "b")])


async def finished_run(api: Api) -> str:
    await api.publish(A, TWO)
    api.start_worker()
    run_id = str((await api.start(A, "etl"))["runId"])
    assert await api.wait(A, run_id) == "completed"
    return run_id


async def test_events_are_the_runs_ledger_entries_in_chain_order(api: Api) -> None:
    run_id = await finished_run(api)
    items = (await api.get_json(A, f"/runs/{run_id}/events"))["items"]
    stored = await api.sql(
        "SELECT seq, entry_hash FROM ledger_entries WHERE run_id = :r ORDER BY seq", r=run_id
    )
    assert [(i["seq"], i["entryHash"]) for i in items] == [
        (r["seq"], r["entry_hash"]) for r in stored
    ]
    assert items[0]["type"] == "run.created" and items[-1]["type"] == "run.completed"
    assert all(b["prevHash"] == a["entryHash"] for a, b in itertools.pairwise(items))


async def test_events_page_and_resume_after_a_seq(api: Api) -> None:
    run_id = await finished_run(api)
    first = await api.get_json(A, f"/runs/{run_id}/events?page_size=3")
    assert [i["seq"] for i in first["items"]] == [1, 2, 3] and first["nextPageToken"]
    rest = await api.get_json(A, f"/runs/{run_id}/events?page_token={first['nextPageToken']}")
    assert rest["items"][0]["seq"] == 4
    after = await api.get_json(A, f"/runs/{run_id}/events?after=5")
    assert after["items"][0]["seq"] == 6


async def test_another_tenant_gets_not_found(api: Api) -> None:
    run_id = await finished_run(api)
    response = await api.client.get(f"{BASE}/runs/{run_id}/events", headers=api.headers(B))
    assert response.status_code == 404
    assert assert_envelope(response)["code"] == "RUN_NOT_FOUND"
