"""An in-memory store for driving the pure run lifecycle in tests, one "transaction" per event.

It applies `Transitions` the way the store writer does and answers the facts the machine
asks for, so tests of `RunLifecycle` need no database.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable
from typing import Any

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.ledger import GENESIS_HASH, LedgerEntry
from stellaorch.domain.lifecycle import RunLifecycle, facts_needed
from stellaorch.domain.spec import CompiledDag, compile_dag, parse_spec
from stellaorch.domain.status import TERMINAL_STEP, AttemptStatus, RunStatus, StepStatus
from stellaorch.domain.transitions import EndFacts, Limits, RunRecord, StepFact, Transitions

LIMITS = Limits(max_run_output_bytes=1_000, lost_attempt_limit=2)


def dag_of(steps: list[dict[str, Any]], edges: list[tuple[str, str]] = ()) -> CompiledDag:  # type: ignore[assignment]
    """Compile a DAG from step documents and (from, to) edges."""
    spec = {
        "dagId": "d",
        "version": 1,
        "steps": steps,
        "edges": [{"from": a, "to": b} for a, b in edges],
    }
    return compile_dag(parse_spec(spec))


def new_run(dag: CompiledDag, run_id: str = "r1") -> RunRecord:
    """A queued run record of `dag`, as the create script builds it."""
    return RunRecord(
        run_id=run_id,
        tenant="acme",
        dag_id="d",
        dag_version=dag.spec.version,
        run_token=f"tok-{run_id}",
        inputs_json="{}",
        inputs_hash="sha256:x",
        status=RunStatus.QUEUED.value,
        trace_id="t" * 32,
        trigger="api",
        replay_of=None,
        created_us=0,
        started_us=None,
        ended_us=None,
        outputs_hash=None,
        error_json=None,
        open_steps=len(dag.order),
        ledger_seq=0,
        ledger_head=GENESIS_HASH,
    )


class Store:
    """Rows kept in dicts; `event` runs one transaction of the lifecycle against them."""

    def __init__(self, dag: CompiledDag, seed: int = 0) -> None:
        self.dag = dag
        self.rng = random.Random(seed)
        self.now = 1_000_000
        self.runs: dict[str, RunRecord] = {}
        self.steps: dict[tuple[str, str], dict[str, Any]] = {}
        self.attempts: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.queue: dict[int, dict[str, Any]] = {}
        self.entries: list[LedgerEntry] = []
        self._ids = itertools.count(1)

    # -- one transaction -----------------------------------------------------------------
    def event(self, feed: Callable[[RunLifecycle], None], run_ids: list[str]) -> Transitions:
        """Run `feed` on a fresh machine tracking copies of the runs, answer it, apply it."""
        self.now += 1_000
        machine = RunLifecycle(self.now, LIMITS, self.rng)
        for run_id in run_ids:
            machine.track(dataclasses.replace(self.runs[run_id]), self.dag)
        feed(machine)
        for run_id in machine.ending():
            machine.close(run_id, self.end_facts(run_id))
        for run_id in machine.finishing():
            machine.complete(run_id, self.output_hashes(run_id))
        changes = machine.drain()
        self.apply(changes, machine)
        return changes

    def create(self, run_id: str = "r1") -> Transitions:
        """The create transaction of one run."""
        run = new_run(self.dag, run_id)
        return self.event(lambda m: m.create(run, self.dag, {"runToken": run.run_token}), [])

    def lease(self, queue_id: int) -> Transitions:
        """A worker leases a due item: the claim transaction."""
        item = self.queue[queue_id]
        item["lease"] = f"lease-{queue_id}-{item['attempt']}"

        def feed(m: RunLifecycle) -> None:
            m.assume(item["run_id"], item["step_id"], StepStatus.QUEUED)
            m.start_attempt(
                item["run_id"],
                item["step_id"],
                item["attempt"],
                lease_id=item["lease"],
                worker_id="w",
                inputs_hash=None,
            )

        return self.event(feed, [item["run_id"]])

    def finish(self, queue_id: int, how: str, outputs: dict[str, Any] | None = None) -> Transitions:
        """The complete (or recover, for "lost") transaction of a leased item."""
        item = self.queue[queue_id]
        run_id, step_id, attempt = item["run_id"], item["step_id"], item["attempt"]

        def feed(m: RunLifecycle) -> None:
            m.assume(run_id, step_id, StepStatus.RUNNING)
            m.know(self.facts(run_id, facts_needed(self.dag, step_id)))
            if not m.is_open(run_id):
                return
            if how == "succeed":
                m.succeed(run_id, step_id, attempt, queue_id, outputs or {"n": attempt}, None)
                return
            lost = how == "lost"
            status = AttemptStatus.LOST if lost else AttemptStatus.FAILED
            error = {"code": "X", "message": "", "retryable": how != "fail_hard"}
            earlier = self.lost_count(run_id, step_id)
            m.fail_attempt(run_id, step_id, attempt, queue_id, error, status, earlier_lost=earlier)

        return self.event(feed, [run_id])

    def cancel(self, run_id: str = "r1") -> Transitions:
        """The cancel transaction."""
        return self.event(lambda m: m.end(run_id, RunStatus.CANCELLED, {"reason": "x"}), [run_id])

    # -- facts ---------------------------------------------------------------------------
    def facts(self, run_id: str, step_ids: set[str]) -> dict[tuple[str, str], StepFact]:
        """Stored status and dependency count of some steps."""
        rows = {s: self.steps[(run_id, s)] for s in step_ids}
        return {(run_id, s): StepFact(r["status"], r["deps_remaining"]) for s, r in rows.items()}

    def end_facts(self, run_id: str) -> EndFacts:
        """What closing a run reads."""
        open_steps = [
            (k[1], r["status"])
            for k, r in sorted(self.steps.items(), key=lambda kv: kv[1]["position"])
            if k[0] == run_id and r["status"] not in TERMINAL_STEP
        ]
        leased = frozenset(
            i["step_id"] for i in self.queue.values() if i["run_id"] == run_id and i.get("lease")
        )
        running = [
            (k[1], k[2])
            for k, a in self.attempts.items()
            if k[0] == run_id and a["status"] == AttemptStatus.RUNNING
        ]
        return EndFacts(open_steps, leased, running)

    def output_hashes(self, run_id: str) -> dict[str, str]:
        """Stored outputs hashes of a run's succeeded steps."""
        return {
            k[1]: r["outputs_hash"]
            for k, r in self.steps.items()
            if k[0] == run_id and r.get("outputs_hash")
        }

    def lost_count(self, run_id: str, step_id: str) -> int:
        """Lost attempts of a step so far."""
        return sum(
            1
            for k, a in self.attempts.items()
            if k[:2] == (run_id, step_id) and a["status"] == AttemptStatus.LOST
        )

    def due(self) -> list[int]:
        """Queue items a worker could lease now."""
        return sorted(i for i, row in self.queue.items() if not row.get("lease"))

    def leased(self) -> list[int]:
        """Queue items leased to a worker."""
        return sorted(i for i, row in self.queue.items() if row.get("lease"))

    # -- the writer ----------------------------------------------------------------------
    def apply(self, t: Transitions, machine: RunLifecycle) -> None:
        """What the store writer does, on dicts."""
        for run in t.new_runs + t.saved_runs:
            self.runs[run.run_id] = dataclasses.replace(run)
        for row in t.new_steps:
            self.steps[(row["run_id"], row["step_id"])] = dict(row)
        self.queue = {
            i: r
            for i, r in self.queue.items()
            if r["run_id"] not in t.drop_run_items and i not in t.dequeue
        }
        for req in t.requeue:
            self.queue[req["b_id"]].update(attempt=req["b_attempt"], lease=None)
        for row in t.enqueue:
            self.queue[next(self._ids)] = dict(row)
        for key, cols in t.steps.items():
            self.steps[key].update(cols)
        for row in t.new_attempts:
            self.attempts[(row["run_id"], row["step_id"], row["attempt"])] = dict(row)
        for key, cols in t.attempts.items():
            self.attempts[key].update(cols)
        self.entries.extend(t.entries)


def error_json(code: str = "X", retryable: bool = True) -> str:
    """The stored form of a step error."""
    return canonical_json({"code": code, "message": "", "retryable": retryable})
