"""Runs started back to back all end, whichever of their steps fail (no step is left queued
without a queue item when another run of the same completion batch fails)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Harness

RUNS = 12


def noop(step_id: str) -> dict[str, Any]:
    return {"id": step_id, "plugin": "noop"}


def fails(step_id: str) -> dict[str, Any]:
    return {"id": step_id, "plugin": "fail", "with": {"retryable": False, "code": "BOOM"}}


SHAPES: dict[str, tuple[list[dict[str, Any]], list[tuple[str, str]]]] = {
    "last_step_fails": ([noop("a"), fails("b")], [("a", "b")]),
    "middle_of_chain_fails": ([noop("a"), fails("b"), noop("c")], [("a", "b"), ("b", "c")]),
    "one_branch_of_fan_out_fails": (
        [noop("a"), fails("b"), noop("c"), noop("d")],
        [("a", "b"), ("a", "c"), ("c", "d")],
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_runs_started_back_to_back_all_fail_when_a_later_step_fails(
    harness: Harness, shape: str
) -> None:
    steps, edges = SHAPES[shape]
    await harness.publish(harness.spec("lossy", steps, edges))
    harness.start_worker()

    created = [await harness.create("lossy") for _ in range(RUNS)]

    views = await asyncio.gather(*(harness.wait_done(c.run.run_id, within=5) for c in created))
    assert [v["status"] for v in views] == ["failed"] * RUNS
    leftover = await harness.sql("SELECT run_id, step_id FROM queue_items")
    assert leftover == []
