"""The web console over a real app: sign-in, cookie flags, CSRF refusal, one-time links,
actions through the API, and tenant isolation on every view."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, READ, Api, MakeApi, spec  # noqa: E402

# The console reads everything through the API, whose store tests run on both stores:
# one store is enough here (and keeps CI within its time budget).
pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)

A, B = "tenant-alpha", "tenant-bravo"
A_DAG = "alpha-ledger"
A_SECRET = "alpha-secret-input-93f1"


@dataclass(frozen=True)
class World:
    """Tenant A's finished run and a client per tenant."""

    api: Api
    run_id: str


def console_client(api: Api) -> httpx.AsyncClient:
    """A browser-like client of the same app (its own cookie jar)."""
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def sign_in(client: httpx.AsyncClient, token: str, tenant: str = "") -> httpx.Response:
    """Post the sign-in form."""
    return await client.post("/console/signin", data={"token": token, "tenant": tenant})


def csrf_of(html: str) -> str:
    """The CSRF field of the first form of a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture
async def world(make_api: MakeApi) -> World:
    """Tenant A with a DAG and a completed run; tenant B with a DAG of its own."""
    api = await make_api()
    await api.publish(A, spec(A_DAG, [{"id": "only", "plugin": "noop"}]))
    await api.publish(B, spec("bravo-dag", [{"id": "b", "plugin": "noop"}]))
    api.start_worker()
    run = await api.start(A, A_DAG, {"secret": A_SECRET})
    assert await api.wait(A, run["runId"]) == "completed"
    await api.stop_worker()
    return World(api, run["runId"])


async def test_sign_in_sets_a_strict_http_only_cookie_and_shows_the_runs(world: World) -> None:
    async with console_client(world.api) as client:
        assert (await client.get("/console/runs")).headers["location"] == "/console/signin"
        response = await sign_in(client, world.api.token([A]))
        assert response.status_code == 303 and response.headers["location"] == "/console/runs"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        page = await client.get("/console/runs")
        assert page.status_code == 200 and world.run_id in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        detail = await client.get(f"/console/runs/{world.run_id}?verify=1")
        assert "Chain verified" in detail.text and "only" in detail.text


async def test_a_bad_token_is_refused_without_a_cookie(world: World) -> None:
    async with console_client(world.api) as client:
        response = await sign_in(client, "not-a-token")
        assert response.status_code == 401 and "set-cookie" not in response.headers
        read_only_other = world.api.token([B], [READ])
        assert (await sign_in(client, read_only_other, A)).status_code == 401


async def test_a_mutation_without_the_session_csrf_field_is_refused(world: World) -> None:
    async with console_client(world.api) as client:
        await sign_in(client, world.api.token([A]))
        form = {"dagId": A_DAG, "inputs": "{}"}
        assert (await client.post("/console/runs", data=form)).status_code == 403
        wrong = await client.post("/console/runs", data={**form, "csrf": "forged"})
        assert wrong.status_code == 403
        runs = await world.api.get_json(A, "/runs")
        assert len(runs["items"]) == 1, "a refused form started a run"
        csrf = csrf_of((await client.get("/console/runs")).text)
        bad_json = await client.post("/console/runs", data={**form, "inputs": "[1", "csrf": csrf})
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
        good = await client.post("/console/runs", data={**form, "csrf": csrf})
        assert good.status_code == 303 and good.headers["location"].startswith("/console/runs/")


async def test_a_one_time_link_signs_in_once(world: World) -> None:
    api = world.api
    minted = await api.client.post(f"{BASE}/console/links", headers=api.headers(A))
    assert minted.status_code == 201, minted.text
    path = minted.json()["path"]
    async with console_client(api) as client:
        assert "Sign in" in (await client.get(path)).text  # a GET does not use it up
        used = await client.post(path)
        assert used.status_code == 303 and "set-cookie" in used.headers
        assert world.run_id in (await client.get("/console/runs")).text
    async with console_client(api) as again:
        assert (await again.post(path)).status_code == 401


async def test_cancel_needs_confirmation_and_lands_in_the_audit_log(world: World) -> None:
    api = world.api
    run = await api.start(A, A_DAG)  # no worker: it stays queued
    async with console_client(api) as client:
        await sign_in(client, api.token([A]))
        page = await client.get(f"/console/runs/{run['runId']}")
        csrf = csrf_of(page.text)
        url = f"/console/runs/{run['runId']}/cancel"
        unconfirmed = await client.post(url, data={"csrf": csrf, "rationale": "wrong inputs"})
        assert unconfirmed.status_code == 400
        done = await client.post(
            url, data={"csrf": csrf, "rationale": "wrong inputs given", "confirm": "yes"}
        )
        assert done.status_code == 303
        assert (await api.get_json(A, f"/runs/{run['runId']}"))["status"] == "cancelled"
        audit = await client.get("/console/audit")
        assert "run.cancel" in audit.text and "wrong inputs given" in audit.text


async def test_sign_out_ends_the_session(world: World) -> None:
    async with console_client(world.api) as client:
        await sign_in(client, world.api.token([A]))
        csrf = csrf_of((await client.get("/console/runs")).text)
        assert (await client.post("/console/signout", data={"csrf": csrf})).status_code == 303
        client.cookies.clear()
        assert (await client.get("/console/runs")).status_code == 303


async def test_tenant_b_sees_nothing_of_tenant_a_in_any_view(world: World) -> None:
    api, run_id = world.api, world.run_id
    views = [
        "/console/runs",
        f"/console/runs?dagId={A_DAG}",
        f"/console/runs/{run_id}",
        f"/console/runs/{run_id}?verify=1",
        "/console/dags",
        "/console/queues",
        "/console/schedules",
        "/console/deadletter",
        "/console/audit",
    ]
    leaks = (run_id, A_DAG, A_SECRET, A)
    async with console_client(api) as client:
        assert (await sign_in(client, api.token([B]))).status_code == 303
        csrf = csrf_of((await client.get("/console/runs")).text)
        for view in views:
            response = await client.get(view)
            assert response.status_code in (200, 404), (view, response.status_code)
            # an echo of B's own URL or filter field is no leak
            shown = response.text.replace(view, "").replace(f'value="{A_DAG}"', "")
            # B typed A's run id into the URL: the "not found" may name it, nothing else
            hidden = [v for v in leaks if v in shown and not (v == run_id and v in view)]
            assert not hidden, (view, hidden, shown[:800])
            if run_id in view:
                assert response.status_code == 404, view
        assert "bravo-dag" in (await client.get("/console/dags")).text  # B sees its own
        switched = await client.post("/console/tenant", data={"csrf": csrf, "tenant": A})
        assert switched.status_code == 403
        cancel = {"csrf": csrf, "rationale": "probe", "confirm": "yes"}
        refused = await client.post(f"/console/runs/{run_id}/cancel", data=cancel)
        assert refused.status_code == 404
        disable = await client.post(
            f"/console/dags/{A_DAG}/1/disable", data={**cancel, "reason": "x"}
        )
        assert disable.status_code == 404
    assert (await api.get_json(A, f"/dags/{A_DAG}/1"))["enabled"] is True
    assert (await api.get_json(A, "/runs"))["items"][0]["tenant"] == A
