"""Dead letter over HTTP: failed steps grouped by error.code, replay links, bulk replay."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

A, B = "acme", "globex"
BAD = spec("etl", [{"id": "load", "plugin": "fail@1", "with": {"code": "DB_DOWN"}}])


async def failed_runs(api: Api, n: int) -> list[str]:
    await api.publish(A, BAD)
    api.start_worker()
    ids = [(await api.start(A, "etl", {"n": i}))["runId"] for i in range(n)]
    for run_id in ids:
        assert await api.wait(A, run_id) == "failed"
    return ids


async def test_failed_steps_are_grouped_by_error_code(api: Api) -> None:
    ids = await failed_runs(api, 6)
    groups = (await api.get_json(A, "/deadletter"))["items"]
    assert [g["code"] for g in groups] == ["DB_DOWN"]
    group = groups[0]
    assert group["count"] == 6
    assert group["firstSeenUtc"] <= group["lastSeenUtc"]
    assert group["dagVersions"] == [{"dagId": "etl", "dagVersion": "1"}]
    assert group["plugins"] == ["fail@1"]
    assert group["sampleRunIds"] == ids[:5]
    assert group["replay"][ids[0]] == f"{BASE}/runs/{ids[0]}:replay"
    assert (await api.get_json(B, "/deadletter"))["items"] == []


async def test_bulk_replay_creates_one_replay_per_failed_run_once(api: Api) -> None:
    ids = await failed_runs(api, 3)
    url = f"{BASE}/deadletter/DB_DOWN:replay"
    first = await api.client.post(url, json={"reason": "INC-7"}, headers=api.headers(A))
    assert first.status_code == 201
    assert sorted(r["replayOf"] for r in first.json()["items"]) == sorted(ids)
    again = await api.client.post(url, json={"reason": "INC-7"}, headers=api.headers(A))
    assert again.status_code == 201 and again.json()["items"] == []


async def test_replay_without_a_reason_is_refused_and_creates_nothing(api: Api) -> None:
    ids = await failed_runs(api, 1)
    for url in (f"{BASE}/deadletter/DB_DOWN:replay", f"{BASE}/runs/{ids[0]}:replay"):
        for body in ({}, {"reason": ""}):
            response = await api.client.post(url, json=body, headers=api.headers(A))
            assert response.status_code == 400, response.text
            assert_envelope(response)
    assert len(await api.sql("SELECT run_id FROM runs")) == 1


async def test_bulk_replay_of_an_unknown_group_is_not_found(api: Api) -> None:
    url = f"{BASE}/deadletter/NOPE:replay"
    response = await api.client.post(url, json={"reason": "x"}, headers=api.headers(A))
    assert response.status_code == 404
    assert assert_envelope(response)["code"] == "DEADLETTER_GROUP_NOT_FOUND"


async def test_bulk_replay_is_all_or_nothing(api: Api) -> None:
    await failed_runs(api, 2)
    headers = api.headers(A)
    await api.client.post(f"{BASE}/dags/etl/1:disable", headers=headers)
    url = f"{BASE}/deadletter/DB_DOWN:replay"
    response = await api.client.post(url, json={"reason": "x"}, headers=headers)
    assert response.status_code == 409
    assert len(await api.sql("SELECT run_id FROM runs")) == 2
