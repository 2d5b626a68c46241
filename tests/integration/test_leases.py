"""Leases: expiry makes attempts `lost`, stale completions are refused, heartbeats (item 4)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.exc import DBAPIError

from stellaorch.domain.errors import StellaError
from stellaorch.domain.status import AttemptStatus
from stellaorch.engine import claim, complete, recover
from stellaorch.engine.requests import Completed, Lease, Outcome

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness


def one_step(harness: Harness, step: dict[str, Any] | None = None) -> dict[str, Any]:
    return harness.spec("one", [step or {"id": "work", "plugin": "noop"}])


async def claim_as_dead_worker(harness: Harness) -> Lease:
    """Lease the next due step as a worker that will never report or heartbeat."""
    env = harness.orchestrator.env
    claimed = await env.db.transact(lambda conn: claim.claim(conn, env, "dead-worker", 1))
    assert len(claimed.leases) == 1
    return claimed.leases[0]


async def report(harness: Harness, *outcomes: Outcome) -> Completed:
    """Report outcomes as a worker does, with no room left to claim more work."""
    env = harness.orchestrator.env
    done, _ = await env.db.transact(
        lambda conn: complete.complete_and_claim(conn, env, list(outcomes), "dead-worker", 0)
    )
    env.bus.publish(done.entries)
    return done


def succeeded(lease: Lease) -> Outcome:
    return Outcome(lease, AttemptStatus.SUCCEEDED, {"by": "dead-worker"})


def attempt_statuses(harness: Harness, view: dict[str, Any]) -> list[str]:
    return [a["status"] for a in harness.step(view, "work")["attempts"]]


# -- expiry and recovery ------------------------------------------------------------------
async def test_expired_lease_is_lost_and_the_step_retried(make_harness: MakeHarness) -> None:
    harness = await make_harness(lease_ttl_seconds=0.4)
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    await claim_as_dead_worker(harness)

    async with harness.worker():
        view = await harness.wait_done(run_id, within=5)

    work = harness.step(view, "work")
    assert view["status"] == "completed"
    assert attempt_statuses(harness, view) == ["lost", "succeeded"]
    assert work["attempts"][0]["workerId"] == "dead-worker"
    assert work["attempts"][0]["error"]["code"] == "LEASE_EXPIRED"
    assert work["outputs"] == {}


async def test_lost_attempts_do_not_use_up_the_retry_budget(make_harness: MakeHarness) -> None:
    harness = await make_harness(lease_ttl_seconds=0.4)
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    await claim_as_dead_worker(harness)  # maxAttempts is 1: only the lost allowance helps

    async with harness.worker():
        view = await harness.wait_done(run_id, within=5)

    assert view["status"] == "completed"


async def test_completion_after_recovery_is_rejected(make_harness: MakeHarness) -> None:
    harness = await make_harness(lease_ttl_seconds=0.4)
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    stale = await claim_as_dead_worker(harness)
    async with harness.worker():
        await harness.wait_done(run_id, within=5)
    before = (await harness.view(run_id), await harness.ledger(run_id))

    late = await report(harness, succeeded(stale))

    assert late.rejected == [succeeded(stale)]
    assert late.entries == []
    assert (await harness.view(run_id), await harness.ledger(run_id)) == before
    assert attempt_statuses(harness, before[0]) == ["lost", "succeeded"]


async def test_completion_while_the_retry_runs_is_rejected(make_harness: MakeHarness) -> None:
    harness = await make_harness(lease_ttl_seconds=0.4)
    nap = {"id": "work", "plugin": "sleep", "with": {"seconds": 0.6}}
    await harness.publish(one_step(harness, nap))
    run_id = (await harness.create("one")).run.run_id
    stale = await claim_as_dead_worker(harness)

    async with harness.worker():

        async def retry_running() -> bool:
            return attempt_statuses(harness, await harness.view(run_id)) == ["lost", "running"]

        await harness.wait_until(retry_running, 5, "the retry of the lost attempt runs")
        late = await report(harness, succeeded(stale))
        view = await harness.wait_done(run_id, within=5)

    assert late.rejected == [succeeded(stale)]
    assert attempt_statuses(harness, view) == ["lost", "succeeded"]
    assert harness.step(view, "work")["outputs"] == {"sleptSeconds": 0.6}


async def test_second_completion_of_the_same_lease_is_rejected(harness: Harness) -> None:
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    lease = await claim_as_dead_worker(harness)

    first = await report(harness, succeeded(lease))
    second = await report(harness, succeeded(lease))

    view = await harness.view(run_id)
    assert first.rejected == []
    assert second.rejected == [succeeded(lease)]
    assert view["status"] == "completed"
    assert attempt_statuses(harness, view) == ["succeeded"]
    types = [e["type"] for e in await harness.ledger(run_id)]
    assert types.count("step.succeeded") == 1


async def test_duplicate_completion_in_one_batch_is_applied_once(harness: Harness) -> None:
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    lease = await claim_as_dead_worker(harness)
    other_outcome = Outcome(lease, AttemptStatus.SUCCEEDED, {"by": "the other report"})

    done = await report(harness, succeeded(lease), other_outcome)

    view = await harness.view(run_id)
    assert done.rejected == [other_outcome]
    assert view["status"] == "completed"
    assert attempt_statuses(harness, view) == ["succeeded"]
    assert harness.step(view, "work")["outputs"] == {"by": "dead-worker"}


@pytest.mark.parametrize("fatal_first", [False, True], ids=["success-first", "failure-first"])
async def test_batch_with_a_success_and_a_fatal_failure_ends_the_run_cleanly(
    harness: Harness, fatal_first: bool
) -> None:
    steps = [{"id": "good", "plugin": "noop"}, {"id": "bad", "plugin": "noop"}]
    steps.append({"id": "after", "plugin": "noop"})
    await harness.publish(harness.spec("pair", steps, [("good", "after")]))
    run_id = (await harness.create("pair")).run.run_id
    env = harness.orchestrator.env
    claimed = await env.db.transact(lambda conn: claim.claim(conn, env, "w", 2))
    lease = {x.step_id: x for x in claimed.leases}
    error = {"code": "BROKEN", "message": "no", "retryable": False}
    fatal = Outcome(lease["bad"], AttemptStatus.FAILED, None, "", error)
    batch = [fatal, succeeded(lease["good"])] if fatal_first else [succeeded(lease["good"]), fatal]

    await report(harness, *batch)

    view = await harness.view(run_id)
    statuses = {s["stepId"]: s["status"] for s in view["steps"]}
    assert view["status"] == "failed"
    assert statuses["bad"] == "failed"
    assert statuses["after"] == "cancelled"
    assert statuses["good"] == ("cancelled" if fatal_first else "succeeded")
    assert "running" not in {a["status"] for s in view["steps"] for a in s["attempts"]}
    assert await harness.sql("SELECT id FROM queue_items") == []


async def test_completion_that_cannot_be_recorded_changes_nothing(harness: Harness) -> None:
    await harness.publish(
        harness.spec(
            "two",
            [{"id": "work", "plugin": "noop"}, {"id": "next", "plugin": "noop"}],
            [("work", "next")],
        )
    )
    run_id = (await harness.create("two")).run.run_id
    lease = await claim_as_dead_worker(harness)
    before = await harness.view(run_id)
    await harness.install("ledger_insert_fails")

    with pytest.raises((DBAPIError, StellaError)):
        await report(harness, succeeded(lease))

    await harness.remove("ledger_insert_fails")
    assert await harness.view(run_id) == before
    retried = await report(harness, succeeded(lease))
    assert retried.rejected == []
    assert harness.step(await harness.view(run_id), "next")["status"] == "queued"


async def test_attempts_lost_again_and_again_finally_fail_the_step(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(lease_ttl_seconds=0.2, lost_attempt_limit=1)
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    env = harness.orchestrator.env

    for _ in range(2):
        await claim_as_dead_worker(harness)
        await asyncio.sleep(0.3)
        entries = await env.db.transact(lambda conn: recover.recover(conn, env))
        env.bus.publish(entries)

    view = await harness.view(run_id)
    assert attempt_statuses(harness, view) == ["lost", "lost"]
    assert view["status"] == "failed"
    assert harness.step(view, "work")["error"]["code"] == "LEASE_EXPIRED"


# -- heartbeats and shutdown --------------------------------------------------------------
async def test_heartbeats_keep_a_long_attempt_past_the_lease_ttl(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(lease_ttl_seconds=0.6)
    nap = {"id": "work", "plugin": "sleep", "with": {"seconds": 1.5}}

    view = await harness.run_to_end(one_step(harness, nap), within=5)

    assert view["status"] == "completed"
    assert attempt_statuses(harness, view) == ["succeeded"]


async def test_stopped_worker_hands_its_attempt_to_another_worker(harness: Harness) -> None:
    nap = {"id": "work", "plugin": "sleep", "with": {"seconds": 0.3}}
    await harness.publish(one_step(harness, nap))
    run_id = (await harness.create("one")).run.run_id

    async with harness.worker():
        await harness.wait_for_step(run_id, "work", "running")
    async with harness.worker():
        view = await harness.wait_done(run_id, within=5)

    assert view["status"] == "completed"
    assert attempt_statuses(harness, view) == ["lost", "succeeded"]


async def test_cancelled_run_refuses_the_outcome_of_its_running_attempt(harness: Harness) -> None:
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id
    lease = await claim_as_dead_worker(harness)
    await harness.runs.cancel(harness.tenant, run_id)

    late = await report(harness, succeeded(lease))

    view = await harness.view(run_id)
    assert late.rejected == [succeeded(lease)]
    assert view["status"] == "cancelled"
    assert attempt_statuses(harness, view) == ["cancelled"]


async def test_dead_worker_claim_is_visible_as_a_running_attempt(harness: Harness) -> None:
    await harness.publish(one_step(harness))
    run_id = (await harness.create("one")).run.run_id

    await claim_as_dead_worker(harness)

    view = await harness.view(run_id)
    assert view["status"] == "running"
    assert attempt_statuses(harness, view) == ["running"]
