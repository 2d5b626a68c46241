"""A `stella orch worker --metrics-port` serves its own Prometheus counters, behind tokens."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from services import api_token, free_port, service, until_true

from stellaorch.domain.spec import parse_spec
from stellaorch.engine.app import Orchestrator
from stellaorch.engine.requests import RunRequest
from stellaorch.settings import Settings

TENANT, OTHER = "acme", "globex"
RUNS = 5
SPEC = {"dagId": "pair", "version": 1, "steps": [{"id": s, "plugin": "noop"} for s in "ab"]}


def auth(token: str, tenant: str = TENANT) -> dict[str, str]:
    """The headers of an API call as `tenant`."""
    return {"Authorization": f"Bearer {token}", "X-Stella-Tenant": tenant}


COMPLETED = re.compile(r'^orchestrator_runs_total\{.*status="completed".*\} (\S+)$', re.M)


async def test_a_worker_exposes_the_runs_it_finished_to_an_admin_of_the_tenant(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    keys = tmp_path / "keys"
    admin = api_token(keys, TENANT, ["orchestrator:admin"])
    stranger = api_token(keys, OTHER, ["orchestrator:admin"])
    reader = api_token(keys, TENANT, ["orchestrator:read"])
    orch = Orchestrator.open(Settings(database_url=url))
    try:
        await orch.catalog.publish(TENANT, parse_spec(SPEC))
        port = free_port()
        env = {"STELLA_ORCH_KEYS_DIR": str(keys), "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05"}
        args = ("--metrics-port", str(port))
        async with (
            service("worker", url, tmp_path / "worker.log", env, args) as worker,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            assert f"metrics on http://127.0.0.1:{port}/metrics" in worker.output()
            for i in range(RUNS):
                await orch.runs.create(RunRequest(TENANT, "pair", {"i": i}))

            async def scraped_all() -> bool:
                got = await client.get("/metrics", headers=auth(admin))
                assert got.status_code == 200, got.text
                found = COMPLETED.search(got.text)
                return found is not None and float(found.group(1)) == RUNS

            await until_true(scraped_all, 20, f"the worker counted {RUNS} completed runs")

            anonymous = await client.get("/metrics", headers={"X-Stella-Tenant": TENANT})
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["code"]
            too_weak = await client.get("/metrics", headers=auth(reader))
            assert too_weak.status_code == 403
            other = await client.get("/metrics", headers=auth(stranger, OTHER))
            assert other.status_code == 200
            assert TENANT not in other.text
    finally:
        await orch.close()
