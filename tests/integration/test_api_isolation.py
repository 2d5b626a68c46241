"""Tenant isolation over every operation of the OpenAPI document (a new route cannot escape).

Tenant A owns a DAG and a finished run with logs; tenant B calls every operation with A's
ids in the path, query and body, and must learn nothing of A and change nothing of A.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, dump, spec  # noqa: E402

from stellaorch.engine.workers import presence  # noqa: E402

A, B = "tenant-alpha", "tenant-bravo"
A_DAG, B_DAG = "payroll-sync", "bravo-reports"
A_RUN_TOKEN = "alpha-run-token-7f3e9c"
A_INPUT = "alpha-confidential-input"
A_LOG_LINE = "alpha-confidential-log-line"
A_ALERT_URL = "http://127.0.0.1:9/alpha-confidential-hook"  # never called: no alert loop runs
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# Operations not probed here, each with its reason. Keep this list short: every entry is a
# route whose isolation is proven elsewhere.
SKIPPED = {
    ("get", f"{BASE}/runs/stream"): "WebSocket; isolation covered by test_api_stream.py",
    ("get", f"{BASE}/.well-known/openapi"): "the document itself; holds no tenant data",
}
# Operations of SPEC §3 that exist today: the document must keep listing them.
EXPECTED = {
    ("post", f"{BASE}/dags"),
    ("get", f"{BASE}/dags"),
    ("get", f"{BASE}/dags/{{dagId}}/{{version}}"),
    ("post", f"{BASE}/dags/{{dagId}}/{{version}}:disable"),
    ("post", f"{BASE}/dags/{{dagId}}/{{version}}:enable"),
    ("post", f"{BASE}/runs"),
    ("get", f"{BASE}/runs"),
    ("get", f"{BASE}/runs/{{runId}}"),
    ("post", f"{BASE}/runs/{{runId}}:cancel"),
    ("post", f"{BASE}/runs/{{runId}}:replay"),
    ("get", f"{BASE}/runs/{{runId}}/first-signal"),
    ("get", f"{BASE}/runs/{{runId}}/steps"),
    ("get", f"{BASE}/runs/{{runId}}/steps/{{stepId}}"),
    ("get", f"{BASE}/runs/{{runId}}/steps/{{stepId}}/logs"),
    ("get", f"{BASE}/runs/{{runId}}/steps/{{stepId}}/metrics"),
    ("get", f"{BASE}/artifacts/{{hash}}"),
    ("get", f"{BASE}/admin/health"),
    ("get", f"{BASE}/admin/metrics"),
    ("post", f"{BASE}/bundles"),
    ("get", f"{BASE}/bundles"),
    ("get", f"{BASE}/bundles/{{name}}/{{version}}"),
    ("post", f"{BASE}/bundles:verify"),
    ("get", f"{BASE}/workers"),
    ("get", "/metrics"),
    ("post", f"{BASE}/schedules/{{scheduleId}}:backfill"),
    ("get", f"{BASE}/alerts"),
    ("get", f"{BASE}/alerts/{{ruleId}}"),
    ("put", f"{BASE}/alerts/{{ruleId}}"),
    ("delete", f"{BASE}/alerts/{{ruleId}}"),
    ("get", f"{BASE}/alert-deliveries"),
    ("post", f"{BASE}/console/links"),
    ("get", f"{BASE}/admin/slos"),
    ("put", f"{BASE}/admin/slos/{{sloId}}"),
    # The worker API (docs/workers.md): a tenant-B worker claims nothing of A's, and A's
    # lease ids are refused with the one answer every unheld lease gets.
    ("post", f"{BASE}/tasks:claim"),
    ("post", f"{BASE}/tasks:heartbeat"),
    ("post", f"{BASE}/tasks/{{leaseId}}:progress"),
    ("post", f"{BASE}/tasks/{{leaseId}}:log"),
    ("post", f"{BASE}/tasks/{{leaseId}}:complete"),
    ("post", f"{BASE}/tasks/{{leaseId}}:release"),
    ("put", f"{BASE}/tasks/{{leaseId}}/artifacts/{{sha256}}"),
    ("post", f"{BASE}/tasks:complete"),
}
# B publishing must not touch A's namespace, so its DAG body names B's own DAG.
BODY_OVERRIDES: dict[tuple[str, str], Any] = {
    ("post", f"{BASE}/dags"): spec("bravo-probe", [{"id": "a", "plugin": "noop"}]),
}


@dataclass(frozen=True)
class World:
    """Tenant A's data that tenant B must never see."""

    run_id: str
    logs_ref: str
    schedule_id: str
    secrets: dict[str, str]  # marker name -> value found in A's data

    def values(self) -> dict[str, str]:
        """What B puts in path, query and body fields, by parameter name."""
        return {
            "dagId": A_DAG,
            "version": "1",
            "runId": self.run_id,
            "stepId": "say",
            "hash": self.logs_ref,
            "sha256": self.logs_ref.removeprefix("sha256:"),  # an upload naming A's blob
            "tenant": A,
            "runToken": A_RUN_TOKEN,
            "reason": "isolation probe",
            "from": "2000-01-01T00:00:00Z",
            "to": "2100-01-01T00:00:00Z",
            "scheduleId": self.schedule_id,
            "ruleId": "alpha-failures",
            "sloId": "run-failure-rate",
            "fromUtc": "2026-01-01T00:00:00Z",  # a valid backfill window: B must get a 404
            "toUtc": "2026-01-01T06:00:00Z",
            # GET .../logs probes its live form: the follow stream of A's first attempt.
            "follow": "true",
            "attempt": "1",
        }


@dataclass(frozen=True)
class Probe:
    """One request built from an operation of the document."""

    method: str
    template: str
    url: str
    params: dict[str, str]
    body: Any

    def send(self, client: httpx.AsyncClient, headers: Mapping[str, str]) -> Any:
        """Send the probe with the given caller headers."""
        kwargs: dict[str, Any] = {"params": self.params, "headers": dict(headers)}
        if self.body is not None:
            kwargs["json"] = self.body
        return client.request(self.method.upper(), self.url, **kwargs)

    def sent_text(self) -> str:
        """Everything the caller itself supplied (an echo of it is no leak)."""
        return f"{self.url} {self.params} {dump(self.body)}"


# -- reading the document -----------------------------------------------------------------
def operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) for every operation, with path-level parameters merged."""
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in HTTP_METHODS:
            if method in item:
                operation = dict(item[method])
                operation["parameters"] = [*shared, *operation.get("parameters", [])]
                yield method, path, operation


def resolve(document: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s."""
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return dict(schema)


def minimal(
    document: Mapping[str, Any], schema: Mapping[str, Any], values: Mapping[str, str], name: str
) -> Any:
    """The smallest instance of `schema`, with A's ids for fields named like them."""
    schema = resolve(document, schema)
    choices = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if choices:
        usable = [c for c in choices if resolve(document, c).get("type") != "null"]
        return minimal(document, usable[0] if usable else choices[0], values, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            k: minimal(document, props.get(k, {}), values, k) for k in schema.get("required", [])
        }
    if kind == "array":
        item = minimal(document, schema.get("items", {}), values, name)
        return [item] * int(schema.get("minItems", 0))
    return scalar(kind, schema, values, name)


def scalar(kind: Any, schema: Mapping[str, Any], values: Mapping[str, str], name: str) -> Any:
    """A scalar for a field: A's value when the name is known, else the type's minimum."""
    if name in values and kind in (None, "string"):
        return values[name]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    return "x" * max(1, int(schema.get("minLength", 1)))


def build_probe(
    document: Mapping[str, Any],
    method: str,
    template: str,
    operation: Mapping[str, Any],
    values: Mapping[str, str],
) -> Probe:
    """A request for the operation with A's ids substituted wherever a parameter names one."""
    url, params = template, {}
    for param in operation["parameters"]:
        name, where = param["name"], param["in"]
        value = values.get(name, f"probe-{name.lower()}")
        if where == "path":
            url = url.replace(f"{{{name}}}", quote(value, safe=":"))
        elif where == "query" and (param.get("required") or name in values):
            params[name] = value
    return Probe(
        method, template, url, params, request_body(document, method, template, operation, values)
    )


def request_body(
    document: Mapping[str, Any],
    method: str,
    template: str,
    operation: Mapping[str, Any],
    values: Mapping[str, str],
) -> Any:
    """A minimal valid JSON body, or None when the operation takes none."""
    if (method, template) in BODY_OVERRIDES:
        return BODY_OVERRIDES[(method, template)]
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return minimal(document, content["application/json"].get("schema", {}), values, "body")


# -- the world ----------------------------------------------------------------------------
@pytest.fixture
async def world(make_api: MakeApi) -> tuple[Api, World]:
    """Tenant A with a DAG and a completed run with logs; tenant B with a DAG of its own."""
    api = await make_api()
    say = {"id": "say", "plugin": "script", "with": {"command": f"echo {A_LOG_LINE}"}}
    await api.publish(A, spec(A_DAG, [say, {"id": "done", "plugin": "noop"}], [("say", "done")]))
    await api.publish(B, spec(B_DAG, [{"id": "b", "plugin": "noop"}]))
    api.start_worker()
    run = await api.start(A, A_DAG, {"secret": A_INPUT}, runToken=A_RUN_TOKEN)
    assert await api.wait(A, run["runId"]) == "completed"
    await api.stop_worker()
    # A worker (of another process) serving both tenants: B may see it, never A's name on it.
    await api.orchestrator.workers.beat(presence("shared-worker:1:aa", (A, B), 2, 0))
    view = await api.get_json(A, f"/runs/{run['runId']}")
    logs_ref = next(s["logsRef"] for s in view["steps"] if s["stepId"] == "say")
    assert logs_ref, view
    schedule = await api.client.post(
        f"{BASE}/schedules",
        json={"dagId": A_DAG, "cron": "0 * * * *", "inputs": {"secret": A_INPUT}},
        headers=api.headers(A),
    )
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["scheduleId"]
    rule = await api.client.put(
        f"{BASE}/alerts/alpha-failures",
        json={"kind": "run.failed", "url": A_ALERT_URL, "dagId": A_DAG},
        headers=api.headers(A),
    )
    assert rule.status_code == 200, rule.text
    secrets = {
        "runId": run["runId"],
        "dagId": A_DAG,
        "runToken": A_RUN_TOKEN,
        "tenant": A,
        "input": A_INPUT,
        "logLine": A_LOG_LINE,
        "logsRef": logs_ref.removeprefix("sha256:"),
        "inputsHash": view["inputsHash"].removeprefix("sha256:"),
        "outputsHash": view["outputsHash"].removeprefix("sha256:"),
        "traceId": view["traceId"],
        "scheduleId": schedule_id,
        "alertUrl": A_ALERT_URL,
    }
    return api, World(run["runId"], logs_ref, schedule_id, secrets)


async def snapshot(api: Api, run_id: str) -> dict[str, Any]:
    """Everything A can read about its own data."""
    return {
        "run": await api.get_json(A, f"/runs/{run_id}"),
        "dag": await api.get_json(A, f"/dags/{A_DAG}/1"),
        "runs": await api.get_json(A, "/runs"),
        "dags": await api.get_json(A, "/dags"),
        "logs": await api.get_json(A, f"/runs/{run_id}/steps/say/logs"),
        "schedules": await api.get_json(A, "/schedules"),
        "alerts": await api.get_json(A, "/alerts"),
    }


async def probes_of(api: Api, world: World) -> tuple[list[Probe], set[tuple[str, str]]]:
    """A probe for every documented operation not skipped, and the operations seen."""
    response = await api.client.get(f"{BASE}/.well-known/openapi")
    assert response.status_code == 200
    document = response.json()
    seen, probes = set(), []
    for method, path, operation in operations(document):
        seen.add((method, path))
        if (method, path) not in SKIPPED:
            probes.append(build_probe(document, method, path, operation, world.values()))
    return probes, seen


def problems_as_b(probe: Probe, response: httpx.Response, world: World) -> list[str]:
    """What is wrong with B's response to a probe carrying A's ids."""
    where = f"{probe.method.upper()} {probe.template} -> {response.status_code}"
    if response.status_code >= 500:
        return [f"{where}: server error {response.text[:300]}"]
    if response.is_success:
        leaked = [k for k, v in world.secrets.items() if v in response.text]
        return [f"{where}: 2xx leaks A's {leaked}: {response.text[:300]}"] if leaked else []
    problems = []
    if response.status_code not in (400, 403, 404):
        problems.append(f"{where}: expected 400/403/404")
    sent = probe.sent_text()
    leaked = [k for k, v in world.secrets.items() if v in response.text and v not in sent]
    if leaked:
        problems.append(f"{where}: error leaks A's {leaked}: {response.text[:300]}")
    try:
        assert_envelope(response)
    except AssertionError as exc:
        problems.append(f"{where}: {exc}")
    return problems


def forbidden_problem(probe: Probe, response: httpx.Response, who: str) -> list[str]:
    """A cross-tenant header must be refused before anything else happens."""
    if response.status_code == 403 and response.json()["error"]["code"] == "TENANT_FORBIDDEN":
        return []
    where = f"{probe.method.upper()} {probe.template} ({who})"
    return [
        f"{where}: expected 403 TENANT_FORBIDDEN, got {response.status_code} {response.text[:200]}"
    ]


# -- the tests ----------------------------------------------------------------------------
async def test_skip_list_is_small_and_expected_routes_are_documented(
    world: tuple[Api, World],
) -> None:
    api, data = world
    probes, seen = await probes_of(api, data)
    assert len(SKIPPED) <= 3
    assert seen >= EXPECTED, f"documented operations missing: {sorted(EXPECTED - seen)}"
    assert len(probes) == len(seen - set(SKIPPED))


async def test_tenant_b_learns_nothing_of_tenant_a_on_any_route(world: tuple[Api, World]) -> None:
    api, data = world
    before = await snapshot(api, data.run_id)
    probes, _ = await probes_of(api, data)
    as_b = api.headers(B)
    problems: list[str] = []
    for probe in probes:
        problems += problems_as_b(probe, await probe.send(api.client, as_b), data)
    assert not problems, "\n".join(problems)
    assert await snapshot(api, data.run_id) == before, "B's calls changed A's data"
    assert before["run"]["status"] == "completed"
    assert before["dag"]["enabled"] is True


async def test_a_token_for_tenant_b_header_is_forbidden_on_every_route(
    world: tuple[Api, World],
) -> None:
    api, data = world
    probes, _ = await probes_of(api, data)
    a_token_b_header = api.headers(B, token_tenants=[A])
    b_token_a_header = api.headers(A, token_tenants=[B])
    problems: list[str] = []
    for probe in probes:
        problems += forbidden_problem(
            probe, await probe.send(api.client, a_token_b_header), "A's token, tenant B"
        )
        problems += forbidden_problem(
            probe, await probe.send(api.client, b_token_a_header), "B's token, tenant A"
        )
    assert not problems, "\n".join(problems)


async def test_same_dag_id_in_two_tenants_is_two_independent_dags(
    world: tuple[Api, World],
) -> None:
    api, data = world
    other = spec(A_DAG, [{"id": "other", "plugin": "noop"}])
    response = await api.client.post(f"{BASE}/dags", json=other, headers=api.headers(B))
    # A conflict here would tell B that A has a DAG of that name and version.
    assert response.status_code == 201, response.text
    a_view = await api.get_json(A, f"/dags/{A_DAG}/1")
    assert [s["id"] for s in a_view["spec"]["steps"]] == ["say", "done"]
    b_run = await api.start(B, A_DAG)
    assert b_run["tenant"] == B and b_run["runId"] != data.run_id
