"""Per-attempt step metrics: measured by the worker, stored by hash, linked as `metricsRef`."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, spec  # noqa: E402

# Burns CPU for a moment, touches ~24 MiB, prints a known amount; the second attempt passes.
BUSY = (
    "python3 -c \"import sys; b = b'x' * (24 << 20); n = sum(range(3_000_000)); "
    "print('x' * 999)\"; "
    'test "$STELLA_ATTEMPT" -ge 2'
)


async def test_each_attempt_has_cpu_rss_wall_and_output_bytes(api: Api) -> None:
    step = {"id": "busy", "plugin": "script", "with": {"command": BUSY}}
    step["retry"] = {"maxAttempts": 2, "backoff": {"initialMs": 1}}
    await api.publish("t1", spec("metered", [step, {"id": "done", "plugin": "noop"}]))
    api.start_worker()
    run = await api.start("t1", "metered", {})
    assert await api.wait("t1", run["runId"]) == "completed"
    await api.stop_worker()

    view = await api.get_json("t1", f"/runs/{run['runId']}/steps/busy")
    assert view["metricsRef"].startswith("sha256:")
    assert [a["metricsRef"] for a in view["attempts"]][-1] == view["metricsRef"]
    body = await api.get_json("t1", f"/runs/{run['runId']}/steps/busy/metrics")
    assert [a["attempt"] for a in body["attempts"]] == [1, 2]
    for item in body["attempts"]:
        metrics = item["metrics"]
        assert metrics["cpuSeconds"] > 0.02, metrics
        assert metrics["maxRssBytes"] > 24 << 20, metrics
        assert metrics["wallSeconds"] >= metrics["cpuSeconds"] * 0.5, metrics
        assert metrics["logBytes"] == 1000, metrics
    stored = await api.client.get(
        f"{BASE}/artifacts/{body['attempts'][1]['metricsRef']}", headers=api.headers("t1")
    )
    assert stored.json() == body["attempts"][1]["metrics"]
    # An in-process plugin gets wall time and bytes only: no process was measured.
    done = await api.get_json("t1", f"/runs/{run['runId']}/steps/done/metrics")
    only = done["attempts"][0]["metrics"]
    assert only["cpuSeconds"] is None and only["maxRssBytes"] is None
    assert only["wallSeconds"] >= 0 and only["outputBytes"] == 0


async def test_metrics_of_another_tenants_run_are_not_found(api: Api) -> None:
    await api.publish("t1", spec("solo", [{"id": "a", "plugin": "noop"}]))
    api.start_worker()
    run = await api.start("t1", "solo", {})
    assert await api.wait("t1", run["runId"]) == "completed"
    await api.stop_worker()
    other = await api.client.get(
        f"{BASE}/runs/{run['runId']}/steps/a/metrics", headers=api.headers("t2")
    )
    assert other.status_code == 404
    missing = await api.client.get(
        f"{BASE}/runs/{run['runId']}/steps/nope/metrics", headers=api.headers("t1")
    )
    assert missing.status_code == 404
