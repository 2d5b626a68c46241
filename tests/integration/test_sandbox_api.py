"""The sandbox as the server wires it: on by default, reported by health, and the attack chain
of issue 9 (a write token reading the signing key through a script step) closed end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, spec  # noqa: E402

A = "acme"


def script_dag(dag_id: str, command: Any, **step: Any) -> dict[str, Any]:
    """A one-step DAG running `command` with the script plugin."""
    return spec(dag_id, [{"id": "s", "plugin": "script", "with": {"command": command}, **step}])


async def health(api: Api) -> dict[str, Any]:
    """The health document as a reader of tenant A."""
    response = await api.client.get(
        f"{BASE}/admin/health", headers=api.headers(A, scopes=["orchestrator:read"])
    )
    document: dict[str, Any] = response.json()
    return document


async def step_error_and_logs(api: Api, run_id: str) -> tuple[dict[str, Any], str]:
    """The step's error object and its log text (every attempt)."""
    view = await api.get_json(A, f"/runs/{run_id}")
    step = next(s for s in view["steps"] if s["stepId"] == "s")
    logs = await api.get_json(A, f"/runs/{run_id}/steps/s/logs")
    return step.get("error") or {}, "".join(str(item) for item in logs["items"])


@pytest.mark.usefixtures("require_sandbox")
async def test_a_write_token_cannot_read_the_signing_key_or_the_database(api: Api) -> None:
    keys = sorted(Path(api.settings.keys_dir).resolve().iterdir())  # noqa: ASYNC240
    database = api.settings.database_url.removeprefix("sqlite:///")
    targets = [str(k) for k in keys] + (
        [database] if api.orchestrator.env.db.dialect == "sqlite" else []
    )
    command = ["/bin/sh", "-c", 'for f in "$@"; do cat "$f"; done; exit 0', "sh", *targets]
    await api.publish(A, script_dag("steal", command))
    run = await api.start(A, "steal")
    api.start_worker()
    assert await api.wait(A, run["runId"]) == "completed"
    _, logs = await step_error_and_logs(api, run["runId"])
    assert "PRIVATE KEY" not in logs and "SQLite format" not in logs
    assert logs.count("No such file or directory") == len(targets)


@pytest.mark.usefixtures("require_sandbox")
async def test_health_reports_the_sandbox_on_and_available(api: Api) -> None:
    sandbox = (await health(api))["sandbox"]
    assert (sandbox["mode"], sandbox["available"], sandbox["reason"]) == ("on", True, None)


async def test_without_bubblewrap_health_says_so_and_steps_fail_typed(make_api: MakeApi) -> None:
    api = await make_api(sandbox="on", sandbox_bwrap="/nonexistent/bwrap")
    sandbox = (await health(api))["sandbox"]
    assert (sandbox["mode"], sandbox["available"]) == ("on", False)
    assert "not installed" in sandbox["reason"]
    await api.publish(A, script_dag("any", ["true"]))
    run = await api.start(A, "any")
    api.start_worker()
    assert await api.wait(A, run["runId"]) == "failed"
    error, _ = await step_error_and_logs(api, run["runId"])
    assert error["code"] == "SANDBOX_UNAVAILABLE"


async def test_sandbox_off_is_explicit_and_shown_in_health(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(sandbox="off")
    assert "SANDBOX DISABLED" in caplog.text
    sandbox = (await health(api))["sandbox"]
    assert (sandbox["mode"], sandbox["available"]) == ("off", False)
    await api.publish(A, script_dag("loose", ["true"]))
    run = await api.start(A, "loose")
    api.start_worker()
    assert await api.wait(A, run["runId"]) == "completed"
