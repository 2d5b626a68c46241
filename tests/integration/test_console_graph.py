"""The run page's DAG graph and the run diff page over a real app, tenant-scoped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import Api, MakeApi, spec  # noqa: E402

# The console reads everything through the API, whose store tests run on both stores:
# one store is enough here (and keeps CI within its time budget).
pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)

A, B = "tenant-alpha", "tenant-bravo"
A_DAG = "alpha-chain"
A_SECRET = "alpha-secret-input-93f1"
STEPS = [{"id": "extract", "plugin": "noop"}, {"id": "load", "plugin": "noop"},
         {"id": "check", "plugin": "noop"}, {"id": "report", "plugin": "noop"}]  # fmt: skip
EDGES = [("extract", "load"), ("extract", "check"), ("load", "report"), ("check", "report")]


@dataclass(frozen=True)
class World:
    """Two finished runs of tenant A (other inputs) and one of tenant B."""

    api: Api
    first: str
    second: str
    bravo: str


def console_client(api: Api) -> httpx.AsyncClient:
    """A browser-like client of the same app (its own cookie jar)."""
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@asynccontextmanager
async def signed_in(api: Api, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    """A console client signed in with a token of `tenant`."""
    async with console_client(api) as client:
        response = await client.post("/console/signin", data={"token": api.token([tenant])})
        assert response.status_code == 303, response.text
        yield client


@pytest.fixture
async def world(make_api: MakeApi) -> World:
    """Tenant A's four-step diamond run twice; tenant B's own run."""
    api = await make_api()
    await api.publish(A, spec(A_DAG, STEPS, EDGES))
    await api.publish(B, spec("bravo-dag", [{"id": "b", "plugin": "noop"}]))
    api.start_worker()
    first = await api.start(A, A_DAG, {"day": "2026-01-01"})
    second = await api.start(A, A_DAG, {"day": "2026-01-02", "secret": A_SECRET})
    bravo = await api.start(B, "bravo-dag", {})
    for tenant, run in ((A, first), (A, second), (B, bravo)):
        assert await api.wait(tenant, run["runId"]) == "completed"
    await api.stop_worker()
    return World(api, first["runId"], second["runId"], bravo["runId"])


def svg_of(html: str) -> ET.Element:
    """The inline SVG of a page, parsed."""
    found = re.search(r"<svg .*?</svg>", html, re.S)
    assert found, html[:800]
    return ET.fromstring(found.group(0))


async def test_the_run_page_draws_the_dag_in_layers_with_step_statuses(world: World) -> None:
    async with signed_in(world.api, A) as client:
        page = await client.get(f"/console/runs/{world.first}")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    svg = svg_of(page.text)
    assert svg.get("role") == "img" and "4 steps in 3 layers" in (svg.get("aria-label") or "")
    ns = "{http://www.w3.org/2000/svg}"
    nodes = {g.findtext(f"{ns}text"): g for g in svg.iter(f"{ns}g")}
    assert set(nodes) == {"extract", "load", "check", "report"}
    assert all("dag-succeeded" in (g.get("class") or "") for g in nodes.values())
    x_of = {step: int(g.find(f"{ns}rect").get("x") or 0) for step, g in nodes.items()}  # type: ignore[union-attr]
    assert x_of["extract"] < x_of["load"] == x_of["check"] < x_of["report"]
    assert len(svg.findall(f"{ns}path")) == len(EDGES)
    assert '<ol class="steps">' in page.text and 'id="step-report"' in page.text  # text list
    assert 'name="with"' in page.text  # the compare form


async def test_the_diff_page_shows_both_runs_side_by_side(world: World) -> None:
    async with signed_in(world.api, A) as client:
        form = await client.get(f"/console/runs/{world.first}/diff", params={"with": world.second})
        assert form.status_code == 303
        assert form.headers["location"] == f"/console/runs/{world.first}/diff/{world.second}"
        page = await client.get(form.headers["location"])
        expected = await world.api.get_json(A, f"/runs/{world.first}/diff/{world.second}")
    assert page.status_code == 200, page.text[:500]
    assert expected["identical"] is False
    for row in expected["differences"]:
        assert row["field"] in page.text
    assert "inputs.day" in page.text and "&#34;2026-01-01&#34;" in page.text
    assert "&#34;2026-01-02&#34;" in page.text
    assert page.text.count("— same") == len(STEPS)  # every step's record agrees
    assert "noop v1" in page.text  # the plugin as a name and version, not a Python dict


async def test_a_run_compared_with_itself_is_identical(world: World) -> None:
    async with signed_in(world.api, A) as client:
        page = await client.get(f"/console/runs/{world.first}/diff/{world.first}")
    assert page.status_code == 200 and "The runs do not differ" in page.text


async def test_another_tenants_run_is_not_found_on_the_diff_page(world: World) -> None:
    async with signed_in(world.api, B) as client:
        pages = [
            f"/console/runs/{world.first}/diff/{world.second}",
            f"/console/runs/{world.bravo}/diff/{world.first}",
            f"/console/runs/{world.first}/diff/{world.bravo}",
        ]
        for path in pages:
            response = await client.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert "No data" in response.text
            for leak in (A_DAG, A_SECRET, "2026-01-0", "extract"):
                assert leak not in response.text, (path, leak)
        graph = await client.get(f"/console/runs/{world.first}")
        assert graph.status_code == 404 and "<svg" not in graph.text


async def test_a_hostile_run_id_is_escaped_on_the_diff_page(world: World) -> None:
    async with signed_in(world.api, A) as client:
        response = await client.get(
            f"/console/runs/{world.first}/diff", params={"with": "<script>x</script>"}
        )
        assert response.status_code == 303 and "<" not in response.headers["location"]
        page = await client.get(response.headers["location"])
    assert page.status_code == 404 and "<script>x" not in page.text


async def test_the_diff_page_needs_a_sign_in(world: World) -> None:
    async with console_client(world.api) as client:
        response = await client.get(f"/console/runs/{world.first}/diff/{world.second}")
    assert response.status_code == 303 and response.headers["location"] == "/console/signin"
