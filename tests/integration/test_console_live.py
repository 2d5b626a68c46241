"""Console downloads (step logs, artifacts, the run's ledger) and the live fragments (run
rows, a run's steps): headers, content, filters, hostile ids and tenant isolation."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import Api, MakeApi, spec  # noqa: E402

from stellaorch.console import downloads  # noqa: E402
from stellaorch.plugins.base import PluginResult, StepContext  # noqa: E402

# The console reads everything through the API, whose store tests run on both stores:
# one store is enough here (and keeps CI within its time budget).
pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)

A, B = "tenant-alpha", "tenant-bravo"
A_DAG = "alpha-reports"
LOG_TEXT = "fetched 3 feeds\nwrote <b>42</b> rows\n"
HOSTILE_HTML = b"<html><script>alert('owned')</script></html>"


class Reporter:
    """A step that logs two lines and names a stored artifact in its outputs."""

    name = "reporter"
    version = "1"

    def __init__(self, ref: str) -> None:
        self.ref = ref

    async def run(self, ctx: StepContext) -> PluginResult:
        return PluginResult(outputs={"report": {"ref": self.ref}, "rows": 42}, logs=LOG_TEXT)


@dataclass(frozen=True)
class World:
    """Tenant A's finished run with a log and an HTML artifact."""

    api: Api
    run_id: str
    ref: str


def console_client(api: Api) -> httpx.AsyncClient:
    """A browser-like client of the same app (its own cookie jar)."""
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@asynccontextmanager
async def signed_in(api: Api, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    """A console client signed in for one tenant."""
    async with console_client(api) as client:
        response = await client.post("/console/signin", data={"token": api.token([tenant])})
        assert response.status_code == 303, response.text
        yield client


def tbody(html: str) -> str:
    """The run table's body of a page or fragment."""
    found = re.search(r"<tbody>(.*?)</tbody>", html, re.S)
    assert found, html[:800]
    return found.group(1)


@pytest.fixture
async def world(make_api: MakeApi) -> World:
    """Tenant A's completed run (a log and an artifact); tenant B with a DAG of its own."""
    api = await make_api()
    ref = await api.orchestrator.runs.put_artifact(A, HOSTILE_HTML, "text/html")
    api.orchestrator.plugins.register(Reporter(ref))
    await api.publish(A, spec(A_DAG, [{"id": "fetch", "plugin": "reporter"}]))
    await api.publish(B, spec("bravo-dag", [{"id": "b", "plugin": "noop"}]))
    api.start_worker()
    run = await api.start(A, A_DAG)
    assert await api.wait(A, run["runId"]) == "completed"
    await api.stop_worker()
    return World(api, run["runId"], ref)


def assert_attachment(response: httpx.Response, name: str, media: str) -> None:
    """A download: saved under `name`, of type `media`, never sniffed or rendered."""
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert response.headers["content-type"].split(";")[0] == media
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


async def test_a_step_log_downloads_as_a_text_attachment(world: World) -> None:
    async with signed_in(world.api, A) as client:
        page = await client.get(f"/console/runs/{world.run_id}")
        link = f"/console/runs/{world.run_id}/logs/fetch.txt?attempt=1"
        assert f'href="{link}"' in page.text
        response = await client.get(link)
        assert_attachment(response, f"{world.run_id}-fetch-attempt1.txt", "text/plain")
        assert response.text == LOG_TEXT
        every = await client.get(f"/console/runs/{world.run_id}/logs/fetch.txt")
        assert every.text == LOG_TEXT


async def test_an_html_artifact_downloads_as_bytes_never_as_html(world: World) -> None:
    async with signed_in(world.api, A) as client:
        page = await client.get(f"/console/runs/{world.run_id}")
        assert f'href="/console/artifacts/{world.ref}"' in page.text
        response = await client.get(f"/console/artifacts/{world.ref}")
        name = world.ref.replace(":", "-") + ".bin"
        assert_attachment(response, name, "application/octet-stream")
        assert response.content == HOSTILE_HTML


async def test_the_ledger_export_is_every_entry_of_the_run_in_chain_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downloads, "EXPORT_PAGE", 2)  # follow several API pages
    expected = (await world.api.get_json(A, f"/runs/{world.run_id}/events?page_size=500"))["items"]
    assert len(expected) > 2
    async with signed_in(world.api, A) as client:
        page = await client.get(f"/console/runs/{world.run_id}")
        assert f"/console/runs/{world.run_id}/export.ndjson" in page.text
        response = await client.get(f"/console/runs/{world.run_id}/export.ndjson")
    assert_attachment(response, f"{world.run_id}-ledger.ndjson", "application/x-ndjson")
    entries = [json.loads(line) for line in response.text.splitlines()]
    assert entries == expected
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)


async def test_tenant_b_gets_not_found_for_every_download_of_tenant_a(world: World) -> None:
    urls = [
        f"/console/runs/{world.run_id}/logs/fetch.txt",
        f"/console/runs/{world.run_id}/export.ndjson",
        f"/console/artifacts/{world.ref}",
    ]
    async with signed_in(world.api, B) as client:
        for url in urls:
            response = await client.get(url)
            assert response.status_code == 404, (url, response.status_code)
            assert "content-disposition" not in response.headers
            assert "fetched 3 feeds" not in response.text and "owned" not in response.text
            assert response.headers["content-type"].startswith("text/html")  # the error page


async def test_hostile_step_ids_and_hashes_are_refused_or_escaped(world: World) -> None:
    run = world.run_id
    hostile = [
        f"/console/runs/{run}/logs/%3Cscript%3Ealert(1)%3C%2Fscript%3E.txt",
        f"/console/runs/{run}/logs/..%2F..%2Fetc%2Fpasswd.txt",
        f"/console/runs/{run}/logs/fetch.html",
        f"/console/runs/{run}/logs/fetch.txt?attempt=-1",
        f"/console/runs/{'x' * 300}/export.ndjson",
        "/console/artifacts/sha256:..%2F..%2Fetc",
        f"/console/artifacts/sha256:{'A' * 64}",
        f"/console/artifacts/md5:{'0' * 32}",
    ]
    async with signed_in(world.api, A) as client:
        for url in hostile:
            response = await client.get(url)
            assert response.status_code in (404, 422), (url, response.status_code)
            assert "<script>alert(1)" not in response.text, url
            assert "content-disposition" not in response.headers, url
    assert downloads.filename('a"b\r\n;c', "../x") == "a_b_c-.._x"
    assert downloads.filename("", "") == "download"


async def test_downloads_need_a_session(world: World) -> None:
    async with console_client(world.api) as client:
        response = await client.get(f"/console/artifacts/{world.ref}")
        assert response.status_code == 303 and response.headers["location"] == "/console/signin"


async def test_the_rows_fragment_matches_the_list_page_and_its_filters(world: World) -> None:
    api = world.api
    queued = await api.start(A, A_DAG)  # no worker: it stays queued
    async with signed_in(api, A) as client:
        for query in ("", "?status=queued", f"?dagId={A_DAG}&status=completed"):
            page = await client.get(f"/console/runs{query}")
            rows = await client.get(f"/console/runs/rows{query}")
            assert rows.status_code == 200 and "<html" not in rows.text
            assert tbody(rows.text) == tbody(page.text), query
        only_queued = (await client.get("/console/runs/rows?status=queued")).text
        assert queued["runId"] in only_queued and world.run_id not in only_queued
        none = await client.get("/console/runs/rows?dagId=no-such-dag")
        assert "No data" in none.text and "<tbody>" not in none.text


async def test_the_rows_fragment_shows_another_tenant_nothing(world: World) -> None:
    async with signed_in(world.api, B) as client:
        for query in ("", f"?dagId={A_DAG}"):
            rows = await client.get(f"/console/runs/rows{query}")
            assert rows.status_code == 200 and "No data" in rows.text
            assert world.run_id not in rows.text and A not in rows.text
        steps = await client.get(f"/console/runs/{world.run_id}/live")
        assert steps.status_code == 404 and "fetch" not in steps.text
    async with console_client(world.api) as anonymous:
        assert (await anonymous.get("/console/runs/rows")).status_code == 401


async def test_the_steps_fragment_says_when_the_run_has_ended(world: World) -> None:
    queued = await world.api.start(A, A_DAG)
    async with signed_in(world.api, A) as client:
        done = await client.get(f"/console/runs/{world.run_id}/live")
        assert done.headers["x-stella-run-final"] == "1" and "fetch" in done.text
        live = await client.get(f"/console/runs/{queued['runId']}/live")
        assert live.headers["x-stella-run-final"] == "0"
        page = await client.get(f"/console/runs/{queued['runId']}")
        assert f'data-live-src="/console/runs/{queued["runId"]}/live"' in page.text
        assert "data-live-src" not in (await client.get(f"/console/runs/{world.run_id}")).text
