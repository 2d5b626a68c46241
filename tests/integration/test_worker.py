"""The worker: order, retries, failures, timeouts, skipped steps, plugin errors (item 4)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from stellaorch.domain.providers import parse_utc
from stellaorch.plugins import PluginResult, StepContext
from stellaorch.plugins.builtin import builtin_registry
from stellaorch.store import blobs

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness


def noop(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "plugin": "noop", **extra}


def flaky(
    until: int | None, *, retryable: bool = True, max_attempts: int, initial_ms: int = 10
) -> dict[str, Any]:
    params: dict[str, Any] = {"retryable": retryable, "code": "FLAKY"}
    if until is not None:
        params["untilAttempt"] = until
    return {
        "id": "flaky",
        "plugin": "fail",
        "with": params,
        "retry": {
            "maxAttempts": max_attempts,
            "backoff": {"initialMs": initial_ms, "factor": 2, "jitter": 0},
        },
    }


def started_ms(attempt: dict[str, Any]) -> int:
    return parse_utc(attempt["startedUtc"]) // 1000


def ended_ms(attempt: dict[str, Any]) -> int:
    return parse_utc(attempt["endedUtc"]) // 1000


# -- order --------------------------------------------------------------------------------
async def test_steps_run_in_deterministic_fifo_topological_order(harness: Harness) -> None:
    # Roots a and m are queued in lexical order; each completion queues its newly ready
    # successors in lexical order behind what is already queued (per-tenant FIFO).
    spec = harness.spec(
        "levels",
        [noop(s) for s in ("m", "z", "e", "d", "c", "b", "a")],
        [("a", "z"), ("a", "b"), ("m", "c"), ("z", "d"), ("b", "d"), ("c", "e")],
    )

    view = await harness.run_to_end(spec, concurrency=1)

    ledger = await harness.ledger(view["runId"])
    ran = [e["stepId"] for e in ledger if e["type"] == "step.running"]
    assert ran == ["a", "m", "b", "z", "c", "d", "e"]


async def test_the_same_dag_runs_in_the_same_order_every_time(harness: Harness) -> None:
    steps = [noop(f"s{i}") for i in (5, 3, 8, 1, 9, 2, 7)]
    edges = [("s1", "s9"), ("s3", "s2"), ("s5", "s2"), ("s2", "s7"), ("s9", "s7"), ("s8", "s9")]
    spec = harness.spec("repeat", steps, edges)
    orders = []
    for _ in range(3):
        view = await harness.run_to_end(spec, concurrency=1)
        ledger = await harness.ledger(view["runId"])
        orders.append([e["stepId"] for e in ledger if e["type"] == "step.running"])

    assert orders[0] == orders[1] == orders[2]


# -- retries ------------------------------------------------------------------------------
async def test_retryable_failure_is_retried_until_it_succeeds(harness: Harness) -> None:
    view = await harness.run_to_end(harness.spec("retry", [flaky(3, max_attempts=5)]))

    step = harness.step(view, "flaky")
    assert view["status"] == "completed"
    assert step["status"] == "succeeded"
    assert step["attempt"] == 3
    assert [a["status"] for a in step["attempts"]] == ["failed", "failed", "succeeded"]
    assert [a["error"]["code"] for a in step["attempts"][:2]] == ["FLAKY", "FLAKY"]
    assert step["outputs"] == {"attempt": 3}


async def test_retries_wait_for_the_exponential_backoff(harness: Harness) -> None:
    spec = harness.spec("backoff", [flaky(3, max_attempts=3, initial_ms=150)])

    view = await harness.run_to_end(spec)

    first, second, third = harness.step(view, "flaky")["attempts"]
    assert started_ms(second) - ended_ms(first) >= 150 - 1
    assert started_ms(third) - ended_ms(second) >= 300 - 1


async def test_retries_are_recorded_in_the_ledger(harness: Harness) -> None:
    view = await harness.run_to_end(harness.spec("retry", [flaky(2, max_attempts=2)]))

    ledger = await harness.ledger(view["runId"])
    steps = [(e["type"], e["attempt"]) for e in ledger if e["stepId"] == "flaky"]
    assert steps == [
        ("step.queued", 1),
        ("step.running", 1),
        ("step.retrying", 2),
        ("step.running", 2),
        ("step.succeeded", 2),
    ]
    retry = next(e for e in ledger if e["type"] == "step.retrying")
    assert retry["data"]["error"]["code"] == "FLAKY"
    assert {e["traceId"] for e in ledger} == {view["traceId"]}


async def test_exhausted_retries_fail_the_step_and_the_run(harness: Harness) -> None:
    spec = harness.spec(
        "exhaust",
        [
            flaky(None, max_attempts=2),
            {"id": "nap", "plugin": "sleep", "with": {"seconds": 30}},
            noop("after"),
            noop("late"),
        ],
        [("flaky", "after"), ("nap", "late")],
    )
    started = time.monotonic()

    view = await harness.run_to_end(spec, within=5)

    flaky_step = harness.step(view, "flaky")
    assert view["status"] == "failed"
    assert view["error"]["code"] == "FLAKY"
    assert view["error"]["stepId"] == "flaky"
    assert flaky_step["status"] == "failed"
    assert [a["status"] for a in flaky_step["attempts"]] == ["failed", "failed"]
    assert flaky_step["error"]["code"] == "FLAKY"
    others = {s["stepId"]: s["status"] for s in view["steps"] if s["stepId"] != "flaky"}
    assert others == {"nap": "cancelled", "after": "cancelled", "late": "cancelled"}
    assert [a["status"] for a in harness.step(view, "nap")["attempts"]] == ["cancelled"]
    assert time.monotonic() - started < 5


async def test_non_retryable_failure_is_not_retried(harness: Harness) -> None:
    spec = harness.spec("final", [flaky(None, retryable=False, max_attempts=5)])

    view = await harness.run_to_end(spec)

    step = harness.step(view, "flaky")
    assert view["status"] == "failed"
    assert [a["status"] for a in step["attempts"]] == ["failed"]
    assert step["error"] == {
        "code": "FLAKY",
        "message": "failure injected by the fail plugin",
        "retryable": False,
    }


# -- timeouts and skipped steps -----------------------------------------------------------
async def test_step_exceeding_its_timeout_is_timed_out(harness: Harness) -> None:
    step = {"id": "nap", "plugin": "sleep", "with": {"seconds": 5}, "timeoutSeconds": 0.3}
    started = time.monotonic()

    view = await harness.run_to_end(harness.spec("timeout", [step]), within=4)

    nap = harness.step(view, "nap")
    assert time.monotonic() - started < 3
    assert view["status"] == "failed"
    assert [a["status"] for a in nap["attempts"]] == ["timed_out"]
    assert nap["attempts"][0]["error"]["code"] == "STEP_TIMED_OUT"
    assert nap["error"]["code"] == "STEP_TIMED_OUT"


async def test_timed_out_attempt_is_retried(harness: Harness) -> None:
    step = {
        "id": "nap",
        "plugin": "sleep",
        "with": {"seconds": 5},
        "timeoutSeconds": 0.2,
        "retry": {"maxAttempts": 2, "backoff": {"initialMs": 10}},
    }

    view = await harness.run_to_end(harness.spec("timeout", [step]), within=4)

    attempts = harness.step(view, "nap")["attempts"]
    assert [a["status"] for a in attempts] == ["timed_out", "timed_out"]


async def test_disabled_step_is_skipped_and_its_successors_run(harness: Harness) -> None:
    spec = harness.spec(
        "skip",
        [noop("a"), noop("b", disabled=True), noop("c", disabled=True), noop("d")],
        [("a", "b"), ("b", "c"), ("c", "d")],
    )

    view = await harness.run_to_end(spec)

    statuses = {s["stepId"]: s["status"] for s in view["steps"]}
    assert view["status"] == "completed"
    assert statuses == {"a": "succeeded", "b": "skipped", "c": "skipped", "d": "succeeded"}
    assert harness.step(view, "b")["attempts"] == []


async def test_run_of_only_disabled_steps_completes_at_once(harness: Harness) -> None:
    await harness.publish(harness.spec("idle", [noop("a", disabled=True)]))

    created = await harness.create("idle")

    assert created.run.status == "completed"
    assert harness.step(await harness.view(created.run.run_id), "a")["status"] == "skipped"


# -- store outages -----------------------------------------------------------------------
async def test_worker_rides_out_a_store_outage(make_harness: MakeHarness) -> None:
    harness = await make_harness(sqlite_busy_timeout_ms=50)
    steps = [{"id": f"s{i}", "plugin": "sleep", "with": {"seconds": 0.1}} for i in range(5)]
    spec = harness.spec("chain", steps, [(f"s{i}", f"s{i + 1}") for i in range(4)])
    await harness.publish(spec)
    run_id = (await harness.create("chain")).run.run_id

    async with harness.worker():
        await harness.wait_for_step(run_id, "s1", "running")
        async with harness.store_outage():
            await asyncio.sleep(0.6)
        view = await harness.wait_done(run_id, within=10)

    assert view["status"] == "completed"
    assert [[a["status"] for a in s["attempts"]] for s in view["steps"]] == [["succeeded"]] * 5


# -- plugin errors ------------------------------------------------------------------------
class CrashingPlugin:
    name = "crash"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        raise RuntimeError("boom in the plugin")


async def test_plugin_crash_fails_the_attempt_without_a_stack_trace(harness: Harness) -> None:
    harness.orchestrator.plugins.register(CrashingPlugin())
    spec = harness.spec("crash", [{"id": "c", "plugin": "crash"}, noop("next")], [("c", "next")])

    view = await harness.run_to_end(spec)

    step = harness.step(view, "c")
    error = step["attempts"][0]["error"]
    assert view["status"] == "failed"
    assert step["attempts"][0]["status"] == "failed"
    assert error["code"] == "PLUGIN_CRASHED"
    assert "boom in the plugin" in error["message"]
    assert "Traceback" not in error["message"]
    assert 'File "' not in error["message"]
    assert "\n" not in error["message"]


async def test_outputs_larger_than_1_mib_fail_the_step(harness: Harness) -> None:
    spec = harness.spec("big", [noop("big", **{"with": {"outputs": {"blob": "${inputs.blob}"}}})])

    view = await harness.run_to_end(spec, {"blob": "x" * (1024 * 1024 + 1)})

    step = harness.step(view, "big")
    assert view["status"] == "failed"
    assert step["error"]["code"] == "OUTPUT_TOO_LARGE"
    assert step["outputs"] is None


async def test_a_plugin_the_worker_lacks_fails_the_step(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Publish refuses unknown plugins, so publish where `nosuch` exists (another node's
    # plugin set, or one removed since): the worker without it must fail the step cleanly.
    elsewhere = builtin_registry()
    elsewhere.register(_Named("nosuch"))
    monkeypatch.setattr(harness.orchestrator.catalog, "_plugins", elsewhere)
    spec = harness.spec("unknown", [{"id": "x", "plugin": "nosuch"}])
    await harness.publish(spec)
    monkeypatch.undo()
    created = await harness.create("unknown")
    async with harness.worker():
        view = await harness.wait_done(created.run.run_id)

    step = harness.step(view, "x")
    assert view["status"] == "failed"
    assert step["status"] == "failed"
    assert step["error"]["code"] == "PLUGIN_NOT_FOUND"
    assert len(step["attempts"]) == 1


async def test_script_printing_5_mb_finishes_with_bounded_logs(harness: Harness) -> None:
    command = "yes 0123456789abcdef | head -n 300000; echo '{\"ok\": true}'"  # 5.1 MB
    spec = harness.spec("loud", [{"id": "loud", "plugin": "script", "with": {"command": command}}])

    view = await harness.run_to_end(spec, within=20)

    step = harness.step(view, "loud")
    assert view["status"] == "completed"
    assert step["outputs"] == {"ok": True}
    limit = harness.orchestrator.env.settings.max_log_bytes
    found = await harness.orchestrator.env.db.transact(
        lambda conn: blobs.get_blob(conn, harness.tenant, step["logsRef"])
    )
    assert found is not None
    logs = found[0]
    assert len(logs) <= limit + 200
    assert logs.endswith(b" bytes dropped\n")


class _Named:
    """A plugin that exists only in the publisher's registry."""

    version = "1"

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, ctx: StepContext) -> PluginResult:
        """Never called: the worker does not have this plugin."""
        raise AssertionError("not reachable")
