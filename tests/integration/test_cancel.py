"""Cancelling runs: queued and running steps, subprocesses, idempotency (engine issue item 3)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness


def three_levels(harness: Harness) -> dict[str, Any]:
    steps = [{"id": s, "plugin": "noop"} for s in ("root", "left", "right", "join")]
    edges = [("root", "left"), ("root", "right"), ("left", "join"), ("right", "join")]
    return harness.spec("levels", steps, edges)


def script_spec(harness: Harness, marker: str) -> dict[str, Any]:
    """One script step with a child in the background, both sleeping `marker` seconds.

    The marker (a duration no other process uses) finds the step's processes from the host,
    inside or outside the sandbox, by their command line.
    """
    command = f"sleep {marker} & sleep {marker}; echo done"
    return harness.spec(
        "scripted", [{"id": "long", "plugin": "script", "with": {"command": command}}]
    )


def unique_marker() -> str:
    """A sleep duration of about 30 s that names this test's processes."""
    return f"30.{secrets.randbelow(10**9):09d}"


def running_with(marker: str) -> list[int]:
    """Pids of non-zombie processes whose command line holds `marker`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker.encode() in argv and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


async def started(marker: str) -> None:
    """Wait until the step and its background child both run."""
    for _ in range(500):
        if len(running_with(marker)) >= 2:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the script never started")


async def wait_gone(marker: str, within: float) -> None:
    """Fail unless every process of the step is gone within `within` seconds."""
    deadline = time.monotonic() + within
    while running_with(marker):
        still = running_with(marker)
        assert time.monotonic() < deadline, f"processes {still} still run after {within}s"
        await asyncio.sleep(0.05)


async def test_cancel_of_a_queued_run_cancels_every_step(harness: Harness) -> None:
    await harness.publish(three_levels(harness))
    run_id = (await harness.create("levels")).run.run_id

    result = await harness.runs.cancel(harness.tenant, run_id, "not needed")

    view = await harness.view(run_id)
    assert result.rejected is False
    assert view["status"] == "cancelled"
    assert {s["status"] for s in view["steps"]} == {"cancelled"}
    assert await harness.sql("SELECT id FROM queue_items") == []
    types = [e["type"] for e in await harness.ledger(run_id)]
    assert types.count("step.cancelled") == 4
    assert types[-1] == "run.cancelled"


async def test_cancelled_run_is_never_started_by_a_worker(harness: Harness) -> None:
    await harness.publish(three_levels(harness))
    run_id = (await harness.create("levels")).run.run_id
    await harness.runs.cancel(harness.tenant, run_id)

    async with harness.worker():
        await asyncio.sleep(0.3)

    view = await harness.view(run_id)
    assert view["status"] == "cancelled"
    assert all(s["attempts"] == [] for s in view["steps"])


# -- running runs -------------------------------------------------------------------------
async def test_cancel_during_a_retry_backoff_prevents_the_next_attempt(harness: Harness) -> None:
    step = {
        "id": "flaky",
        "plugin": "fail",
        "with": {"untilAttempt": 2, "retryable": True},
        "retry": {"maxAttempts": 2, "backoff": {"initialMs": 400, "jitter": 0}},
    }
    await harness.publish(harness.spec("backoff", [step]))
    run_id = (await harness.create("backoff")).run.run_id

    async with harness.worker():

        async def retrying() -> bool:
            return any(e["type"] == "step.retrying" for e in await harness.ledger(run_id))

        await harness.wait_until(retrying, 5, "the first attempt failed")
        await harness.runs.cancel(harness.tenant, run_id)
        await asyncio.sleep(0.6)

    view = await harness.view(run_id)
    flaky = harness.step(view, "flaky")
    assert view["status"] == "cancelled"
    assert flaky["status"] == "cancelled"
    assert [a["status"] for a in flaky["attempts"]] == ["failed"]


async def test_cancel_stops_a_running_sleep_and_frees_the_worker(harness: Harness) -> None:
    await harness.publish(
        harness.spec("slow", [{"id": "nap", "plugin": "sleep", "with": {"seconds": 30}}])
    )
    await harness.publish(harness.spec("quick", [{"id": "go", "plugin": "noop"}]))
    slow = (await harness.create("slow")).run.run_id

    async with harness.worker(concurrency=1):
        await harness.wait_for_step(slow, "nap", "running")
        started = time.monotonic()
        await harness.runs.cancel(harness.tenant, slow)
        quick = (await harness.create("quick")).run.run_id
        quick_view = await harness.wait_done(quick, within=3)

    view = await harness.view(slow)
    nap = harness.step(view, "nap")
    assert view["status"] == "cancelled"
    assert nap["status"] == "cancelled"
    assert [a["status"] for a in nap["attempts"]] == ["cancelled"]
    assert nap["attempts"][0]["endedUtc"] is not None
    assert quick_view["status"] == "completed"
    assert time.monotonic() - started < 3


async def test_cancel_kills_a_running_script_and_its_children(
    harness: Harness,
) -> None:
    marker = unique_marker()
    await harness.publish(script_spec(harness, marker))
    run_id = (await harness.create("scripted")).run.run_id

    async with harness.worker():
        await started(marker)
        await harness.runs.cancel(harness.tenant, run_id)
        await wait_gone(marker, within=4)

    view = await harness.view(run_id)
    attempts = harness.step(view, "long")["attempts"]
    assert view["status"] == "cancelled"
    assert [a["status"] for a in attempts] == ["cancelled"]


async def test_cancel_from_another_process_stops_the_attempt_at_a_heartbeat(
    make_harness: MakeHarness,
) -> None:
    serving = await make_harness(lease_ttl_seconds=1.5)
    elsewhere = await make_harness(url=serving.orchestrator.env.settings.database_url)
    marker = unique_marker()
    await serving.publish(script_spec(serving, marker))
    run_id = (await serving.create("scripted")).run.run_id

    async with serving.worker():
        await started(marker)
        await elsewhere.runs.cancel(serving.tenant, run_id)
        await wait_gone(marker, within=4)

    view = await serving.view(run_id)
    assert view["status"] == "cancelled"
    assert [a["status"] for a in serving.step(view, "long")["attempts"]] == ["cancelled"]


async def test_script_exceeding_its_timeout_is_killed_with_its_children(
    harness: Harness,
) -> None:
    marker = unique_marker()
    spec = script_spec(harness, marker)
    spec["steps"][0]["timeoutSeconds"] = 0.5
    await harness.publish(spec)
    run_id = (await harness.create("scripted")).run.run_id

    async with harness.worker():
        await started(marker)
        view = await harness.wait_done(run_id, within=5)
        await wait_gone(marker, within=3)

    attempts = harness.step(view, "long")["attempts"]
    assert [a["status"] for a in attempts] == ["timed_out"]


# -- idempotency --------------------------------------------------------------------------
async def test_second_cancel_is_rejected_and_changes_nothing(harness: Harness) -> None:
    await harness.publish(three_levels(harness))
    run_id = (await harness.create("levels")).run.run_id
    await harness.runs.cancel(harness.tenant, run_id)
    before = (await harness.view(run_id), await harness.ledger(run_id))

    again = await harness.runs.cancel(harness.tenant, run_id)

    assert again.rejected is True
    assert again.run.status == "cancelled"
    assert again.entries == []
    assert (await harness.view(run_id), await harness.ledger(run_id)) == before


async def test_cancel_of_a_completed_run_is_rejected_unchanged(harness: Harness) -> None:
    view = await harness.run_to_end(three_levels(harness))
    ledger = await harness.ledger(view["runId"])

    result = await harness.runs.cancel(harness.tenant, view["runId"])

    assert result.rejected is True
    assert result.run.status == "completed"
    assert await harness.view(view["runId"]) == view
    assert await harness.ledger(view["runId"]) == ledger


async def test_cancel_of_a_failed_run_is_rejected_unchanged(harness: Harness) -> None:
    view = await harness.run_to_end(harness.spec("bad", [{"id": "f", "plugin": "fail"}]))

    result = await harness.runs.cancel(harness.tenant, view["runId"])

    assert result.rejected is True
    assert result.run.status == "failed"
    assert await harness.view(view["runId"]) == view
