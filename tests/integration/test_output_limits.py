"""Amplification is bounded (issue 9 §3): a run's stored outputs are capped, and run views
inline outputs only within a budget and page their steps, so one GET never returns the
hundreds of MB a hostile DAG could make."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from api_fixtures import BASE, Api, api, assert_envelope, keys_dir, make_api, spec

from stellaorch.engine.views import RUN_INLINE_BYTES, STEP_INLINE_BYTES

if TYPE_CHECKING:
    from conftest import MakeHarness

__all__ = ["api", "keys_dir", "make_api"]


def echo(step_id: str) -> dict[str, Any]:
    """A step whose outputs repeat the run's `big` input."""
    return {"id": step_id, "plugin": "noop", "with": {"outputs": {"v": "${inputs.big}"}}}


def fan(count: int) -> list[dict[str, Any]]:
    return [echo(f"s{i:03}") for i in range(count)]


def chain(count: int) -> list[tuple[str, str]]:
    return [(f"s{i:03}", f"s{i + 1:03}") for i in range(count - 1)]


async def test_a_run_whose_outputs_overrun_the_budget_fails_with_output_limit_exceeded(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(max_run_output_bytes=100_000)
    await harness.publish(harness.spec("amp", fan(10), chain(10)))
    harness.start_worker()

    created = await harness.create("amp", {"big": "x" * 40_000})
    view = await harness.wait_done(created.run.run_id)

    assert view["status"] == "failed"
    assert view["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    assert view["error"]["stepId"] == "s002"  # the third 40 kB output would pass 100 kB
    assert [s["status"] for s in view["steps"][:3]] == ["succeeded", "succeeded", "failed"]
    stored = await harness.sql(
        "SELECT output_bytes, (SELECT SUM(LENGTH(outputs_json)) FROM step_executions "
        "WHERE run_id = :r) AS total FROM runs WHERE run_id = :r",
        r=created.run.run_id,
    )
    assert stored[0]["output_bytes"] == stored[0]["total"] <= 100_000


async def test_a_run_within_the_budget_completes_and_counts_its_outputs(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(max_run_output_bytes=100_000)
    await harness.publish(harness.spec("fits", fan(3), chain(3)))
    harness.start_worker()

    created = await harness.create("fits", {"big": "y" * 1000})
    view = await harness.wait_done(created.run.run_id)

    assert view["status"] == "completed"
    size = len(json.dumps({"v": "y" * 1000}, separators=(",", ":")))
    rows = await harness.sql("SELECT output_bytes FROM runs WHERE run_id = :r", r=view["runId"])
    assert rows[0]["output_bytes"] == 3 * size


async def test_the_run_view_inlines_outputs_only_within_its_budget(api: Api) -> None:
    count = 20
    await api.publish("acme", spec("wide", fan(count)))
    api.start_worker()
    big = "z" * (60 * 1024)  # under the step budget; 20 of them are over the run budget
    run = await api.start("acme", "wide", {"big": big})
    assert await api.wait("acme", run["runId"]) == "completed"

    response = await api.client.get(f"{BASE}/runs/{run['runId']}", headers=api.headers("acme"))
    assert response.status_code == 200
    steps = response.json()["steps"]
    inline = [s for s in steps if not s["outputsTruncated"]]
    assert 0 < len(inline) < count
    assert all(s["outputs"] == {"v": big} for s in inline)
    assert all(s["outputs"] is None and s["outputsHash"] for s in steps if s["outputsTruncated"])
    assert len(response.content) < RUN_INLINE_BYTES + 200 * 1024

    hidden = next(s for s in steps if s["outputsTruncated"])
    one = await api.get_json("acme", f"/runs/{run['runId']}/steps/{hidden['stepId']}")
    assert one["outputs"] == {"v": big} and one["outputsTruncated"] is False


async def test_a_step_output_over_the_step_budget_is_never_inlined(api: Api) -> None:
    await api.publish("acme", spec("one", fan(1)))
    api.start_worker()
    run = await api.start("acme", "one", {"big": "w" * (STEP_INLINE_BYTES + 1)})
    assert await api.wait("acme", run["runId"]) == "completed"

    view = await api.get_json("acme", f"/runs/{run['runId']}")
    assert view["steps"][0]["outputs"] is None
    assert view["steps"][0]["outputsTruncated"] is True


async def test_steps_are_listed_a_page_at_a_time_in_dag_order(api: Api) -> None:
    count = 120
    await api.publish("acme", spec("long", fan(count)))
    api.start_worker()
    run = await api.start("acme", "long", {"big": "v"})
    assert await api.wait("acme", run["runId"]) == "completed"

    seen: list[str] = []
    query: dict[str, Any] = {"page_size": 50}
    pages = 0
    while True:
        page = await api.client.get(
            f"{BASE}/runs/{run['runId']}/steps", params=query, headers=api.headers("acme")
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 50
        seen += [s["stepId"] for s in body["items"]]
        pages += 1
        if not body["nextPageToken"]:
            break
        query["page_token"] = body["nextPageToken"]
    assert pages == 3
    assert seen == [f"s{i:03}" for i in range(count)]
    assert all(s["attempts"] for s in body["items"])


async def test_a_forged_steps_page_token_is_a_400(api: Api) -> None:
    await api.publish("acme", spec("p", fan(1)))
    run = await api.start("acme", "p", {"big": "v"})
    for token in ("not-a-token", "WyJ4Il0", "WzEsMl0"):  # garbage, ["x"], [1,2]
        response = await api.client.get(
            f"{BASE}/runs/{run['runId']}/steps",
            params={"page_token": token},
            headers=api.headers("acme"),
        )
        assert response.status_code == 400, response.text
        assert assert_envelope(response)["code"] == "VALIDATION_FAILED"
