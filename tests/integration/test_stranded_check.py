"""`find_stranded`: open steps and runs nothing will move, and queue items nothing will finish."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from stellaorch.store.invariants import find_stranded

if TYPE_CHECKING:
    from conftest import Harness


def chain(dag_id: str) -> dict[str, Any]:
    steps = [{"id": s, "plugin": "noop"} for s in ("a", "b", "c")]
    return {
        "dagId": dag_id,
        "version": 1,
        "steps": steps,
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    }


async def stranded(harness: Harness) -> list[str]:
    return await harness.orchestrator.env.db.read(find_stranded)


async def test_queued_and_finished_runs_are_not_stranded(harness: Harness) -> None:
    await harness.publish(chain("ok"))
    done = await harness.create("ok")
    async with harness.worker():
        await harness.wait_done(done.run.run_id)
    await harness.create("ok")  # queued, no worker: its first step waits for a claim

    assert await stranded(harness) == []


@pytest.mark.stranded_ok
async def test_queued_step_without_queue_item_is_stranded(harness: Harness) -> None:
    await harness.publish(chain("lost"))
    run_id = (await harness.create("lost")).run.run_id
    await harness.sql("DELETE FROM queue_items WHERE run_id = :r", r=run_id)

    assert await stranded(harness) == [
        f"run {run_id} step a: queued without a queue item",
        f"run {run_id}: open, but none of its steps is queued or running",
    ]


@pytest.mark.stranded_ok
async def test_pending_step_with_no_predecessor_left_is_stranded(harness: Harness) -> None:
    await harness.publish(chain("stuck"))
    run_id = (await harness.create("stuck")).run.run_id
    await harness.sql(
        "UPDATE step_executions SET deps_remaining = 0 WHERE run_id = :r AND step_id = 'c'",
        r=run_id,
    )

    assert await stranded(harness) == [
        f"run {run_id} step c: pending with every predecessor done, never queued"
    ]


@pytest.mark.stranded_ok
async def test_queue_item_of_an_ended_run_is_stranded(harness: Harness) -> None:
    await harness.publish(chain("orphan"))
    run_id = (await harness.create("orphan")).run.run_id
    await harness.runs.cancel(harness.tenant, run_id, "test")
    await harness.sql(
        "INSERT INTO queue_items (tenant, run_id, step_id, attempt, available_us, enqueued_us) "
        "VALUES (:t, :r, 'a', 1, 0, 0)",
        t=harness.tenant,
        r=run_id,
    )

    found = await stranded(harness)

    assert len(found) == 1
    assert f"(run {run_id} step a): step is cancelled, run is cancelled" in found[0]
