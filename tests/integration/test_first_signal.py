"""GET /runs/{runId}/first-signal: 204 until a step is at work, then one stable answer."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, assert_envelope, spec  # noqa: E402

TENANT = "acme"
TWO_STEPS = spec(
    "two",
    [{"id": "first", "plugin": "noop"}, {"id": "second", "plugin": "noop"}],
    [("first", "second")],
)


def url(run_id: str) -> str:
    return f"{BASE}/runs/{run_id}/first-signal"


async def test_a_queued_run_has_no_signal_yet(api: Api) -> None:
    await api.publish(TENANT, TWO_STEPS)
    run = await api.start(TENANT, "two")  # no worker: the run stays queued

    response = await api.client.get(url(run["runId"]), headers=api.headers(TENANT, scopes=[READ]))

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert "etag" not in response.headers


async def test_the_first_step_running_is_the_signal_and_it_never_changes(api: Api) -> None:
    await api.publish(TENANT, TWO_STEPS)
    run = await api.start(TENANT, "two")
    api.start_worker()
    assert await api.wait(TENANT, run["runId"]) == "completed"
    reader = api.headers(TENANT, scopes=[READ])

    first = await api.client.get(url(run["runId"]), headers=reader)
    again = await api.client.get(url(run["runId"]), headers=reader)

    assert first.status_code == 200
    signal = first.json()
    assert (signal["runId"], signal["stepId"], signal["status"]) == (
        run["runId"],
        "first",
        "running",
    )
    assert signal["type"] == "step.updated"  # as the stream names it
    assert signal["sinceCreatedMs"] >= 0
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    assert "private" in first.headers["cache-control"]
    assert again.headers["etag"] == etag
    assert again.content == first.content


async def test_if_none_match_gets_304_for_the_same_tag_only(api: Api) -> None:
    await api.publish(TENANT, TWO_STEPS)
    run = await api.start(TENANT, "two")
    api.start_worker()
    await api.wait(TENANT, run["runId"])
    reader = api.headers(TENANT, scopes=[READ])
    etag = (await api.client.get(url(run["runId"]), headers=reader)).headers["etag"]

    def asking(tags: str) -> dict[str, str]:
        return {**reader, "If-None-Match": tags}

    same = await api.client.get(url(run["runId"]), headers=asking(etag))
    strong_form = await api.client.get(url(run["runId"]), headers=asking(etag.removeprefix("W/")))
    in_a_list = await api.client.get(url(run["runId"]), headers=asking(f'"x", {etag}'))
    star = await api.client.get(url(run["runId"]), headers=asking("*"))
    other = await api.client.get(url(run["runId"]), headers=asking('W/"1"'))

    for response in (same, strong_form, in_a_list, star):
        assert response.status_code == 304, response.headers
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert other.status_code == 200
    assert other.json()["stepId"] == "first"


async def test_a_run_cancelled_before_any_step_ran_signals_its_end(api: Api) -> None:
    await api.publish(TENANT, TWO_STEPS)
    run = await api.start(TENANT, "two")
    cancelled = await api.client.post(
        f"{BASE}/runs/{run['runId']}:cancel",
        json={"reason": "not needed"},
        headers=api.headers(TENANT),
    )
    assert cancelled.status_code == 200, cancelled.text

    response = await api.client.get(url(run["runId"]), headers=api.headers(TENANT, scopes=[READ]))

    assert response.status_code == 200
    assert (response.json()["type"], response.json()["status"]) == ("run.cancelled", "cancelled")


async def test_an_unknown_run_and_another_tenants_run_are_not_found(api: Api) -> None:
    await api.publish(TENANT, TWO_STEPS)
    run = await api.start(TENANT, "two")
    api.start_worker()
    await api.wait(TENANT, run["runId"])
    # Tenant A's signal is cached now: the cache must not answer tenant B.
    assert (await api.client.get(url(run["runId"]), headers=api.headers(TENANT))).status_code == 200

    unknown = await api.client.get(url("no-such-run"), headers=api.headers(TENANT))
    other = await api.client.get(url(run["runId"]), headers=api.headers("globex"))

    for response in (unknown, other):
        assert response.status_code == 404
        assert assert_envelope(response)["code"] == "RUN_NOT_FOUND"
