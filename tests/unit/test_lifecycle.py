"""The pure run lifecycle: each event's transitions, with no database."""

from __future__ import annotations

import random

import pytest
from lifecycle_model import LIMITS, Store, dag_of, new_run

from stellaorch.domain.errors import InvalidTransition
from stellaorch.domain.ledger import GENESIS_HASH, EntryDraft, LedgerEntry, seal
from stellaorch.domain.lifecycle import OUTPUT_LIMIT_EXCEEDED, RunLifecycle, facts_needed
from stellaorch.domain.status import AttemptStatus, RunStatus, StepStatus
from stellaorch.domain.transitions import StepFact

CHAIN = dag_of(
    [{"id": "a", "plugin": "noop"}, {"id": "b", "plugin": "noop"}, {"id": "c", "plugin": "noop"}],
    [("a", "b"), ("b", "c")],
)
DIAMOND = dag_of(
    [{"id": s, "plugin": "noop"} for s in ("top", "left", "right", "join")],
    [("top", "left"), ("top", "right"), ("left", "join"), ("right", "join")],
)


def types(entries: list[LedgerEntry]) -> list[tuple[str, str | None]]:
    return [(e.entry_type, e.step_id) for e in entries]


def only(store: Store) -> int:
    (item,) = store.queue
    return item


def test_a_new_run_queues_its_roots_only() -> None:
    store = Store(DIAMOND)
    changes = store.create()
    assert types(changes.entries) == [("run.created", None), ("step.queued", "top")]
    assert [r["step_id"] for r in changes.enqueue] == ["top"]
    assert {r["step_id"]: r["status"] for r in changes.new_steps}["top"] == "queued"
    assert changes.new_runs[0].ledger_seq == 2 and changes.saved_runs == []


def test_a_join_waits_for_every_predecessor() -> None:
    store = Store(DIAMOND)
    store.create()
    top = only(store)
    store.lease(top)
    store.finish(top, "succeed")
    left, right = store.due()
    store.lease(left)
    assert types(store.finish(left, "succeed").entries) == [("step.succeeded", "left")]
    store.lease(right)
    after = store.finish(right, "succeed")
    assert types(after.entries) == [("step.succeeded", "right"), ("step.queued", "join")]
    assert store.steps[("r1", "join")]["deps_remaining"] == 0


def test_the_first_lease_starts_the_run() -> None:
    store = Store(CHAIN)
    store.create()
    changes = store.lease(only(store))
    assert types(changes.entries) == [("run.started", None), ("step.running", "a")]
    assert changes.new_attempts[0]["status"] == "running"
    assert store.runs["r1"].status == "running" and store.runs["r1"].started_us is not None


def test_the_last_success_completes_the_run_with_every_outputs_hash() -> None:
    store = Store(CHAIN)
    store.create()
    for _ in range(3):
        item = only(store)
        store.lease(item)
        last = store.finish(item, "succeed")
    assert types(last.entries)[-1] == ("run.completed", None)
    run = store.runs["r1"]
    assert run.status == "completed" and run.open_steps == 0
    assert last.entries[-1].data["outputsHash"] == run.outputs_hash
    assert len([e for e in store.entries if e.entry_type == "run.completed"]) == 1


def test_disabled_steps_are_skipped_and_their_successors_still_run() -> None:
    dag = dag_of(
        [
            {"id": "a", "plugin": "noop"},
            {"id": "b", "plugin": "noop", "disabled": True},
            {"id": "c", "plugin": "noop"},
        ],
        [("a", "b"), ("b", "c")],
    )
    assert facts_needed(dag, "a") == {"b", "c"}
    store = Store(dag)
    store.create()
    item = only(store)
    store.lease(item)
    changes = store.finish(item, "succeed")
    assert types(changes.entries) == [
        ("step.succeeded", "a"),
        ("step.skipped", "b"),
        ("step.queued", "c"),
    ]


def test_a_run_of_disabled_steps_only_completes_at_once() -> None:
    store = Store(dag_of([{"id": "a", "plugin": "noop", "disabled": True}]))
    changes = store.create()
    assert types(changes.entries)[-1] == ("run.completed", None)
    assert changes.enqueue == []


def test_a_retryable_failure_requeues_after_backoff() -> None:
    dag = dag_of([{"id": "a", "plugin": "noop", "retry": {"maxAttempts": 2}}])
    store = Store(dag)
    store.create()
    item = only(store)
    store.lease(item)
    changes = store.finish(item, "fail")
    assert types(changes.entries) == [("step.retrying", "a")]
    assert changes.requeue[0]["b_attempt"] == 2 and changes.requeue[0]["b_available"] > store.now
    assert store.attempts[("r1", "a", 1)]["status"] == "failed"
    store.lease(item)
    last = store.finish(item, "fail")
    assert types(last.entries) == [("step.failed", "a"), ("run.failed", None)]
    assert store.queue == {}


def test_a_failure_cancels_the_other_open_steps_and_stops_their_attempts() -> None:
    dag = dag_of(
        [
            {"id": "a", "plugin": "noop"},
            {"id": "b", "plugin": "noop"},
            {"id": "c", "plugin": "noop"},
        ],
        [("a", "c")],
    )
    store = Store(dag)
    store.create()
    a, b = store.due()
    store.lease(a)
    store.lease(b)
    changes = store.finish(a, "fail_hard")
    assert types(changes.entries) == [
        ("step.failed", "a"),
        ("step.cancelled", "b"),
        ("step.cancelled", "c"),
        ("run.failed", None),
    ]
    assert store.attempts[("r1", "b", 1)]["status"] == "cancelled"
    assert changes.drop_run_items == ["r1"] and store.queue == {}
    assert '"stepId":"a"' in (store.runs["r1"].error_json or "")


def test_an_outcome_for_an_ended_run_changes_nothing() -> None:
    dag = dag_of([{"id": "a", "plugin": "noop"}, {"id": "b", "plugin": "noop"}])
    store = Store(dag)
    store.create()
    a, b = store.due()
    store.lease(a)
    store.lease(b)
    store.cancel()
    store.queue[b] = {"run_id": "r1", "step_id": "b", "attempt": 1, "lease": "x"}
    assert store.finish(b, "succeed").entries == []


def test_lost_attempts_do_not_use_up_the_retry_budget_within_the_limit() -> None:
    store = Store(dag_of([{"id": "a", "plugin": "noop"}]))
    store.create()
    item = only(store)
    for _ in range(LIMITS.lost_attempt_limit):
        store.lease(item)
        assert types(store.finish(item, "lost").entries) == [("step.retrying", "a")]
    store.lease(item)
    assert types(store.finish(item, "lost").entries)[-1] == ("run.failed", None)
    assert [a["status"] for a in store.attempts.values()] == ["lost"] * 3


def test_outputs_over_the_run_budget_fail_the_step_for_good() -> None:
    dag = dag_of([{"id": "a", "plugin": "noop", "retry": {"maxAttempts": 3}}])
    store = Store(dag)
    store.create()
    item = only(store)
    store.lease(item)
    changes = store.finish(item, "succeed", {"blob": "x" * LIMITS.max_run_output_bytes})
    assert types(changes.entries) == [("step.failed", "a"), ("run.failed", None)]
    assert changes.entries[0].data["error"]["code"] == OUTPUT_LIMIT_EXCEEDED


def test_cancel_of_a_queued_run_cancels_every_step() -> None:
    store = Store(CHAIN)
    store.create()
    changes = store.cancel()
    assert [t for t, _ in types(changes.entries)] == ["step.cancelled"] * 3 + ["run.cancelled"]
    assert store.runs["r1"].status == "cancelled" and store.runs["r1"].open_steps == 0


def test_a_second_success_of_the_same_step_is_refused() -> None:
    machine = RunLifecycle(1, LIMITS, random.Random(0))
    run = new_run(CHAIN)
    machine.create(run, CHAIN, {})
    machine.assume("r1", "a", StepStatus.RUNNING)
    machine.know({("r1", "b"): StepFact("pending", 1)})
    machine.succeed("r1", "a", 1, 1, {}, None)
    with pytest.raises(InvalidTransition):
        machine.succeed("r1", "a", 1, 1, {}, None)


def test_a_change_to_a_step_that_was_never_read_is_a_bug() -> None:
    machine = RunLifecycle(1, LIMITS, random.Random(0))
    run = new_run(CHAIN)
    run.status = RunStatus.RUNNING.value
    machine.track(run, CHAIN)
    with pytest.raises(RuntimeError, match="before it was read"):
        machine.fail_attempt("r1", "a", 1, 1, {"retryable": False}, AttemptStatus.FAILED)


def test_a_run_ends_early_only_as_failed_or_cancelled() -> None:
    machine = RunLifecycle(1, LIMITS, random.Random(0))
    machine.track(new_run(CHAIN), CHAIN)
    with pytest.raises(ValueError, match="completed"):
        machine.end("r1", RunStatus.COMPLETED, {})


def test_drain_refuses_a_run_that_was_ended_but_not_closed() -> None:
    machine = RunLifecycle(1, LIMITS, random.Random(0))
    machine.track(new_run(CHAIN), CHAIN)
    machine.end("r1", RunStatus.CANCELLED, {})
    with pytest.raises(RuntimeError, match="not closed"):
        machine.drain()


def test_an_entry_of_an_undefined_type_is_never_sealed() -> None:
    draft = EntryDraft(
        run_id="r1", tenant="acme", dag_id="d", trace_id="t" * 32,
        entry_type="run.vanished", status="queued", ts_us=1,  # type: ignore[arg-type]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"run\.vanished"):
        seal(draft, 1, GENESIS_HASH)
