"""Property: any sequence of leases, outcomes and cancels keeps every lifecycle invariant."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lifecycle_model import LIMITS, Store, dag_of

from stellaorch.domain.ledger import GENESIS_HASH, RUN_ENDED, LedgerEntry
from stellaorch.domain.status import (
    STEP_TRANSITIONS,
    TERMINAL_RUN,
    TERMINAL_STEP,
    RunStatus,
    StepStatus,
)

OUTCOMES = ["succeed", "succeed", "succeed", "fail", "fail_hard", "lost"]


@st.composite
def dags(draw: st.DrawFn) -> Any:
    """Random DAGs of 1-7 steps: random forward edges, some disabled, some retried."""
    n = draw(st.integers(1, 7))
    ids = [f"s{i}" for i in range(n)]
    edges = [
        (ids[i], ids[j])
        for i in range(n)
        for j in range(i + 1, n)
        if draw(st.booleans()) and draw(st.booleans())
    ]
    steps = [
        {
            "id": s,
            "plugin": "noop",
            "disabled": draw(st.integers(0, 5)) == 0,
            "retry": {"maxAttempts": draw(st.integers(1, 3)), "backoff": {"initialMs": 0}},
        }
        for s in ids
    ]
    return dag_of(steps, edges)


def drive(store: Store, data: st.DataObject) -> None:
    """Lease and finish items in a random order, maybe cancelling, until the run ends."""
    store.create()
    for _ in range(200):
        if store.runs["r1"].status in TERMINAL_RUN:
            return
        due, leased = store.due(), store.leased()
        actions = (["lease"] if due else []) + (["finish"] if leased else []) + ["cancel"]
        weighted = [a for a in actions for _ in range(1 if a == "cancel" else 10)]
        action = data.draw(st.sampled_from(weighted))
        if action == "lease":
            store.lease(data.draw(st.sampled_from(due)))
        elif action == "finish":
            store.finish(data.draw(st.sampled_from(leased)), data.draw(st.sampled_from(OUTCOMES)))
        else:
            store.cancel()
    raise AssertionError("the run never ended")


def check_chain(entries: list[LedgerEntry]) -> None:
    prev = GENESIS_HASH
    for seq, entry in enumerate(entries, start=1):
        assert (entry.seq, entry.prev_hash) == (seq, prev)
        prev = entry.entry_hash


def check_steps(store: Store, entries: list[LedgerEntry]) -> None:
    """Statuses only move along the table; a step starts only after its predecessors."""
    dag = store.dag
    status = dict.fromkeys(dag.order, StepStatus.PENDING)
    for entry in entries:
        if entry.step_id is None:
            continue
        new = StepStatus(entry.status)
        assert new in STEP_TRANSITIONS[status[entry.step_id]], entry
        if new in (StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.SKIPPED):
            preds = dag.predecessors[entry.step_id]
            assert all(status[p] in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for p in preds)
        status[entry.step_id] = new
    assert all(s in TERMINAL_STEP for s in status.values())
    for step_id, final in status.items():
        assert store.steps[("r1", step_id)]["status"] == final


def check_attempts(store: Store) -> None:
    """No step runs more attempts than its budget plus the lost-attempt allowance."""
    for step_id, step in store.dag.steps.items():
        numbers = sorted(k[2] for k in store.attempts if k[1] == step_id)
        assert numbers == list(range(1, len(numbers) + 1))
        ended = [store.attempts[("r1", step_id, n)]["status"] for n in numbers]
        allowance = min(ended.count("lost"), LIMITS.lost_attempt_limit)
        assert len(numbers) <= step.retry.max_attempts + allowance
        assert "running" not in ended


@settings(max_examples=150, deadline=None)
@given(dag=dags(), seed=st.integers(0, 2**16), data=st.data())
def test_random_event_sequences_keep_every_invariant(dag: Any, seed: int, data: Any) -> None:
    store = Store(dag, seed)
    drive(store, data)
    entries = store.entries
    check_chain(entries)
    ends = [e for e in entries if e.entry_type in RUN_ENDED]
    assert len(ends) == 1 and ends[0] is entries[-1]
    check_steps(store, entries)
    check_attempts(store)
    run = store.runs["r1"]
    assert run.open_steps == 0 and store.queue == {}
    assert run.ledger_seq == len(entries) and run.ledger_head == entries[-1].entry_hash
    steps = {s: store.steps[("r1", s)]["status"] for s in dag.order}
    if run.status == RunStatus.COMPLETED:
        assert set(steps.values()) <= {"succeeded", "skipped"}
    elif run.status == RunStatus.FAILED:
        assert "failed" in steps.values()
