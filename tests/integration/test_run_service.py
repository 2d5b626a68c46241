"""Creating runs: idempotency, atomic creation, inputs and parameter substitution (item 3)."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.exc import DBAPIError

from stellaorch.domain.errors import InputsInvalid, RunNotFound, RunTokenConflict, StellaError
from stellaorch.engine.requests import RunRequest

if TYPE_CHECKING:
    from conftest import Harness

TOKEN = "0190b7c2-5d1e-7a00-8000-000000000001"


def three_levels() -> dict[str, Any]:
    """root -> (left, right) -> join."""
    steps = [{"id": s, "plugin": "noop"} for s in ("root", "left", "right", "join")]
    edges = [("root", "left"), ("root", "right"), ("left", "join"), ("right", "join")]
    return {
        "dagId": "levels",
        "version": 1,
        "steps": steps,
        "edges": [{"from": a, "to": b} for a, b in edges],
    }


# -- idempotent create ----------------------------------------------------------------------
async def test_same_token_and_inputs_return_the_existing_run(harness: Harness) -> None:
    await harness.publish(three_levels())
    first = await harness.create("levels", {"x": 1, "y": [1, 2]}, run_token=TOKEN)

    again = await harness.create("levels", {"y": [1, 2], "x": 1}, run_token=TOKEN)

    assert (first.created, again.created) == (True, False)
    assert again.run.run_id == first.run.run_id
    assert again.entries == []
    assert len(await harness.run_ids(harness.tenant)) == 1


async def test_same_token_with_other_inputs_is_a_conflict(harness: Harness) -> None:
    await harness.publish(three_levels())
    first = await harness.create("levels", {"x": 1}, run_token=TOKEN)

    with pytest.raises(RunTokenConflict):
        await harness.create("levels", {"x": 2}, run_token=TOKEN)

    assert await harness.run_ids(harness.tenant) == [first.run.run_id]


async def test_runs_without_a_token_are_distinct(harness: Harness) -> None:
    await harness.publish(three_levels())

    first = await harness.create("levels", {"x": 1})
    second = await harness.create("levels", {"x": 1})

    assert first.run.run_id != second.run.run_id
    assert first.run.run_token != second.run.run_token


async def test_the_same_token_may_be_used_by_another_tenant(harness: Harness) -> None:
    await harness.publish(three_levels())
    await harness.publish(three_levels(), tenant="other")

    mine = await harness.create("levels", {"x": 1}, run_token=TOKEN)
    theirs = await harness.create("levels", {"x": 2}, run_token=TOKEN, tenant="other")

    assert theirs.created
    assert theirs.run.run_id != mine.run.run_id


async def test_concurrent_creates_with_one_token_make_one_run_announced_once(
    harness: Harness,
) -> None:
    await harness.publish(three_levels())
    announced: list[str] = []
    harness.orchestrator.env.bus.subscribe(lambda entry: announced.append(entry.entry_type))

    results = await asyncio.gather(
        *(harness.create("levels", {"x": 1}, run_token=TOKEN) for _ in range(3))
    )

    assert len({r.run.run_id for r in results}) == 1
    assert [r.created for r in results].count(True) == 1
    assert [len(r.entries) for r in results if not r.created] == [0, 0]
    assert announced.count("run.created") == 1


async def test_concurrent_bad_requests_fail_alone(harness: Harness) -> None:
    await harness.publish(three_levels())

    results = await asyncio.gather(
        harness.create("levels", {"x": 1}, run_token=TOKEN),
        harness.create("levels", {"x": 2}, run_token=TOKEN),
        harness.create("levels", [1, 2]),
        harness.create("unknown"),
        harness.create("levels", {"x": 3}),
        return_exceptions=True,
    )

    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Created", "RunTokenConflict", "InputsInvalid", "DagNotFound", "Created"]
    assert len(await harness.run_ids(harness.tenant)) == 2


# -- atomic creation ----------------------------------------------------------------------
async def test_create_queues_roots_and_leaves_the_rest_pending(harness: Harness) -> None:
    await harness.publish(three_levels())

    created = await harness.create("levels")

    view = await harness.view(created.run.run_id)
    assert view["status"] == "queued"
    assert {s["stepId"]: s["status"] for s in view["steps"]} == {
        "root": "queued",
        "left": "pending",
        "right": "pending",
        "join": "pending",
    }


async def test_create_writes_run_created_and_step_queued_entries(harness: Harness) -> None:
    await harness.publish(three_levels())

    created = await harness.create("levels", {"x": 1})

    ledger = await harness.ledger(created.run.run_id)
    assert [(e["seq"], e["type"], e["stepId"]) for e in ledger] == [
        (1, "run.created", None),
        (2, "step.queued", "root"),
    ]
    assert ledger[0]["data"]["inputsHash"] == created.run.inputs_hash
    assert ledger[0]["data"]["runToken"] == created.run.run_token
    assert [e.entry_hash for e in created.entries] == [
        r["entry_hash"]
        for r in await harness.sql("SELECT entry_hash FROM ledger_entries ORDER BY seq")
    ]


async def test_failed_ledger_write_leaves_no_trace_of_the_run(harness: Harness) -> None:
    await harness.publish(three_levels())
    await harness.install("ledger_insert_fails")

    with pytest.raises((DBAPIError, StellaError)):
        await harness.create("levels", run_token=TOKEN)

    for table in ("runs", "step_executions", "queue_items", "ledger_entries"):
        assert await harness.sql(f"SELECT * FROM {table}") == [], table
    await harness.remove("ledger_insert_fails")
    assert (await harness.create("levels", run_token=TOKEN)).created


# -- inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("inputs", [[1, 2], "text", 3, None], ids=["list", "str", "int", "null"])
async def test_inputs_that_are_not_an_object_are_invalid(harness: Harness, inputs: Any) -> None:
    await harness.publish(three_levels())

    with pytest.raises(InputsInvalid):
        await harness.runs.create(RunRequest(harness.tenant, "levels", inputs))

    assert await harness.run_ids(harness.tenant) == []


async def test_inputs_that_json_cannot_hold_are_invalid(harness: Harness) -> None:
    await harness.publish(three_levels())

    with pytest.raises(InputsInvalid):
        await harness.create("levels", {"x": math.nan})


async def test_inputs_and_upstream_outputs_reach_the_plugin(harness: Harness) -> None:
    spec = harness.spec(
        "subst",
        [
            {"id": "a", "plugin": "noop", "with": {"outputs": {"x": "${inputs.x}", "n": 1}}},
            {
                "id": "b",
                "plugin": "noop",
                "with": {
                    "outputs": {
                        "y": "${steps.a.outputs.x}",
                        "text": "hello ${inputs.who}",
                        "nested": {"list": ["${inputs.x}", "${steps.a.outputs.n}"]},
                    }
                },
            },
        ],
        [("a", "b")],
    )

    view = await harness.run_to_end(spec, {"x": {"deep": [1, 2]}, "who": "world"})

    assert view["status"] == "completed"
    assert harness.step(view, "a")["outputs"] == {"x": {"deep": [1, 2]}, "n": 1}
    assert harness.step(view, "b")["outputs"] == {
        "y": {"deep": [1, 2]},
        "text": "hello world",
        "nested": {"list": [{"deep": [1, 2]}, 1]},
    }


async def test_missing_input_fails_the_step_without_retrying(harness: Harness) -> None:
    spec = harness.spec(
        "missing",
        [
            {
                "id": "a",
                "plugin": "noop",
                "with": {"outputs": {"x": "${inputs.absent}"}},
                "retry": {"maxAttempts": 3, "backoff": {"initialMs": 0}},
            }
        ],
    )

    view = await harness.run_to_end(spec, {"x": 1})

    step = harness.step(view, "a")
    assert view["status"] == "failed"
    assert step["error"]["code"] == "REFERENCE_UNRESOLVED"
    assert len(step["attempts"]) == 1


# -- reading ------------------------------------------------------------------------------
async def test_run_of_another_tenant_is_not_found(harness: Harness) -> None:
    await harness.publish(three_levels())
    created = await harness.create("levels")

    with pytest.raises(RunNotFound):
        await harness.runs.get("other", created.run.run_id)
    with pytest.raises(RunNotFound):
        await harness.runs.cancel("other", created.run.run_id)
    with pytest.raises(RunNotFound):
        await harness.runs.verify("other", created.run.run_id)
    assert await harness.run_ids("other") == []
    assert await harness.runs.status(harness.tenant, created.run.run_id) == "queued"


def _raising_listener(entry: object) -> None:
    raise RuntimeError("listener bug")


async def test_a_raising_listener_does_not_hold_up_create(harness: Harness) -> None:
    await harness.publish(three_levels())
    harness.orchestrator.env.bus.subscribe(_raising_listener)
    announced: list[str] = []
    harness.orchestrator.env.bus.subscribe(lambda entry: announced.append(entry.entry_type))

    created = await asyncio.wait_for(harness.create("levels", {"x": 1}), 5)

    assert (await harness.view(created.run.run_id))["status"] == "queued"
    assert "run.created" in announced


async def test_a_raising_listener_does_not_fail_cancel(harness: Harness) -> None:
    await harness.publish(three_levels())
    created = await harness.create("levels", {"x": 1})
    harness.orchestrator.env.bus.subscribe(_raising_listener)

    cancelled = await asyncio.wait_for(harness.runs.cancel(harness.tenant, created.run.run_id), 5)

    assert not cancelled.rejected
    assert (await harness.view(created.run.run_id))["status"] == "cancelled"
