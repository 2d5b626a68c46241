"""Fixtures for the HTTP API tests: a real app on a fresh store, driven in-process by httpx.

Test modules import the fixtures they use (`from api_fixtures import api, make_api`), so
they stay independent of any conftest in this directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from stellaorch.api.app import create_app
from stellaorch.console.site import mount as mount_console
from stellaorch.engine.app import Orchestrator
from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token
from stellaorch.settings import Settings

BASE = "/api/v1/orchestrator"
READ, WRITE, ADMIN = "orchestrator:read", "orchestrator:write", "orchestrator:admin"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
ENVELOPE_CODE = r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$"


def spec(
    dag_id: str,
    steps: list[dict[str, Any]],
    edges: Iterable[tuple[str, str]] = (),
    version: int | str = 1,
) -> dict[str, Any]:
    """A DAG spec document from steps and (from, to) pairs."""
    return {
        "dagId": dag_id,
        "version": version,
        "steps": steps,
        "edges": [{"from": a, "to": b} for a, b in edges],
    }


def assert_envelope(response: httpx.Response) -> dict[str, Any]:
    """The response is `{"error": {code, message, traceId}}`; returns the inner object."""
    body = response.json()
    assert set(body) == {"error"}, f"not an error envelope: {body}"
    error = body["error"]
    assert {"code", "message", "traceId"} <= set(error), error
    assert re.match(ENVELOPE_CODE, error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    assert re.fullmatch(r"[0-9a-f]{32}", error["traceId"]), error
    return dict(error)


@dataclass
class Api:
    """One app over one orchestrator, plus the moves the API tests repeat."""

    orchestrator: Orchestrator
    app: FastAPI
    client: httpx.AsyncClient
    keys_dir: Path
    settings: Settings
    worker_task: list[asyncio.Task[None]] = field(default_factory=list)

    # -- identity -------------------------------------------------------------------------
    def token(
        self,
        tenants: list[str],
        scopes: Iterable[str] = (ADMIN,),
        *,
        subject: str = "alice",
        ttl_seconds: int = 3600,
    ) -> str:
        """A token signed by the server's trusted key."""
        return issue_token(
            self.keys_dir,
            subject=subject,
            tenants=tenants,
            scopes=list(scopes),
            audience=self.settings.audience,
            ttl_seconds=ttl_seconds,
        )

    def headers(
        self,
        tenant: str | None,
        *,
        scopes: Iterable[str] = (ADMIN,),
        token_tenants: list[str] | None = None,
        reason: str | None = "integration test",
        subject: str = "alice",
    ) -> dict[str, str]:
        """Authorization, tenant and operator-reason headers for a caller."""
        owned = token_tenants if token_tenants is not None else [tenant or "acme"]
        headers = {"Authorization": f"Bearer {self.token(owned, scopes, subject=subject)}"}
        if tenant is not None:
            headers["X-Stella-Tenant"] = tenant
        if reason is not None:
            headers["X-Stella-Operator-Reason"] = reason
        return headers

    # -- arranging ------------------------------------------------------------------------
    async def publish(self, tenant: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a DAG version through the API; it must succeed."""
        response = await self.client.post(
            f"{BASE}/dags", json=dict(document), headers=self.headers(tenant)
        )
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def start(
        self, tenant: str, dag_id: str, inputs: Mapping[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Start a run through the API; it must succeed."""
        body = {"dagId": dag_id, "inputs": dict(inputs or {}), **extra}
        response = await self.client.post(f"{BASE}/runs", json=body, headers=self.headers(tenant))
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    async def wait(self, tenant: str, run_id: str, within: float = 15.0) -> str:
        """Wait for the run to end; returns its terminal status."""
        return await asyncio.wait_for(self.orchestrator.runs.wait(tenant, run_id, 0.05), within)

    def start_worker(self) -> None:
        """Run an in-process worker until `stop_worker` (or teardown)."""
        self.orchestrator.start_worker()

    async def stop_worker(self) -> None:
        """Stop the in-process worker, letting in-flight attempts finish."""
        await self.orchestrator.stop_worker()

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Raw SQL in its own transaction, for reading what the API wrote."""

        def work(conn: Any) -> list[dict[str, Any]]:
            result = conn.execute(text(statement), params)
            return [dict(r) for r in result.mappings()] if result.returns_rows else []

        return await self.orchestrator.env.db.transact(work)

    async def get_json(self, tenant: str, path: str) -> Any:
        """GET a path as an admin of `tenant`; it must succeed."""
        response = await self.client.get(f"{BASE}{path}", headers=self.headers(tenant))
        assert response.status_code == 200, response.text
        return response.json()


def api_settings(url: str, keys_dir: Path, **overrides: Any) -> Settings:
    """Settings for API tests: quick polling, leases that do not expire by accident."""
    values: dict[str, Any] = {
        "database_url": url,
        "keys_dir": keys_dir,
        "bundles_dir": keys_dir.parent / "bundles",  # never the working directory's
        "lease_ttl_seconds": 10.0,
        "poll_interval_seconds": 0.05,
        "schedule_min_interval_seconds": 1,  # the tests' crons fire every second
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def open_api(url: str, keys_dir: Path, **overrides: Any) -> AsyncIterator[Api]:
    """An app on the store at `url`; its worker is stopped and its store closed on exit."""
    settings = api_settings(url, keys_dir, **overrides)
    orch = Orchestrator.open(settings)
    app = mount_console(create_app(orch))  # as `serve` builds it: API plus console
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    try:
        yield Api(orch, app, client, keys_dir, settings)
    finally:
        await client.aclose()
        await orch.close()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """A key directory with one trusted Ed25519 signing key."""
    directory = tmp_path / "keys"
    generate_key(directory)
    return directory


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(new_store_url: Callable[[], str], keys_dir: Path) -> AsyncIterator[MakeApi]:
    """`await make_api(**settings)`: apps on fresh stores, closed at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Api:
            return await stack.enter_async_context(open_api(new_store_url(), keys_dir, **overrides))

        yield make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    """An app on a fresh store with default test settings and no worker."""
    return await make_api()


def dump(value: Any) -> str:
    """Compact JSON for assertion messages."""
    return json.dumps(value, sort_keys=True)[:2000]
