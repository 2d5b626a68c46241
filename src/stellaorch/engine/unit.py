"""One transaction's worth of run and step changes: status machine, ledger, queue, counters.

Every state change in the engine goes through a `RunUnit`: it checks the transition against
the status tables, appends the ledger entry, and defers row writes so a batch of changes is
written with a few executemany statements at `flush`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam

from stellaorch.domain.canonical import canonical_json, hash_json
from stellaorch.domain.ledger import EntryDraft, LedgerEntry
from stellaorch.domain.spec import CompiledDag
from stellaorch.domain.status import (
    TERMINAL_RUN,
    TERMINAL_STEP,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)
from stellaorch.engine.env import EngineEnv
from stellaorch.store import queue, runs
from stellaorch.store.ledger import LedgerWriter
from stellaorch.store.runs import RunState

StepKey = tuple[str, str]
AttemptKey = tuple[str, str, int]


class RunUnit:
    """Changes to some runs inside one open transaction; call `flush` before commit."""

    def __init__(self, conn: Connection, env: EngineEnv) -> None:
        self.conn = conn
        self.env = env
        self.now = env.clock.now_us()
        self.ledger = LedgerWriter()
        self.runs: dict[str, RunState] = {}
        self._dirty: set[str] = set()
        self._status: dict[StepKey, str] = {}
        self._deps: dict[StepKey, int] = {}
        self._step_cols: dict[StepKey, dict[str, Any]] = defaultdict(dict)
        self._attempt_cols: dict[AttemptKey, dict[str, Any]] = defaultdict(dict)
        self._attempt_rows: list[dict[str, Any]] = []
        self._enqueue: list[dict[str, Any]] = []
        self._requeue: list[dict[str, Any]] = []
        self._delete: list[int] = []

    # -- loading -------------------------------------------------------------------------
    def adopt(self, state: RunState) -> RunState:
        """Track a run read (or created) in this transaction."""
        self.runs[state.run_id] = state
        self.ledger.track(state.run_id, state.ledger_seq, state.ledger_head)
        return state

    def load(self, run_ids: Iterable[str]) -> None:
        """Read the runs not yet tracked."""
        missing = [r for r in set(run_ids) if r not in self.runs]
        for state in runs.load_runs(self.conn, missing).values():
            self.adopt(state)

    def dag(self, run: RunState) -> CompiledDag:
        """The compiled DAG version the run executes."""
        return self.env.catalog.compiled(self.conn, run.tenant, run.dag_id, run.dag_version)

    def step_status(self, run_id: str, step_id: str) -> str:
        """The step's status as of this unit's changes."""
        key = (run_id, step_id)
        if key not in self._status:
            self._preload_steps(run_id, [step_id])
        return self._status[key]

    def _preload_steps(self, run_id: str, step_ids: Iterable[str]) -> None:
        wanted = [s for s in step_ids if (run_id, s) not in self._status]
        for step_id, (status, deps) in runs.step_states(self.conn, run_id, wanted).items():
            self._status[(run_id, step_id)] = status
            self._deps[(run_id, step_id)] = deps

    def preload(self, pairs: Iterable[StepKey]) -> None:
        """Read the status of many steps with one query per run."""
        per_run: dict[str, set[str]] = defaultdict(set)
        for run_id, step_id in pairs:
            per_run[run_id].add(step_id)
        for run_id, steps in per_run.items():
            self._preload_steps(run_id, steps)

    def know_new_steps(self, run_id: str, deps: Mapping[str, int]) -> None:
        """Register the steps of a run created in this unit (all pending)."""
        for step_id, count in deps.items():
            self._status[(run_id, step_id)] = StepStatus.PENDING.value
            self._deps[(run_id, step_id)] = count

    def preload_successors(self, pairs: Iterable[StepKey]) -> None:
        """Read, in one query per run, the successors of steps about to finish."""
        per_run: dict[str, set[str]] = defaultdict(set)
        for run_id, step_id in pairs:
            per_run[run_id].update(self.dag(self.runs[run_id]).successors[step_id])
        for run_id, succ in per_run.items():
            self._preload_steps(run_id, succ)

    # -- ledger and status ---------------------------------------------------------------
    def record(
        self,
        run: RunState,
        entry_type: str,
        status: str,
        *,
        step_id: str | None = None,
        attempt: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """Append a ledger entry for the run."""
        draft = EntryDraft(
            run_id=run.run_id,
            tenant=run.tenant,
            dag_id=run.dag_id,
            trace_id=run.trace_id,
            entry_type=entry_type,
            status=status,
            ts_us=self.now,
            step_id=step_id,
            attempt=attempt,
            data=data or {},
        )
        return self.ledger.append(draft)

    def set_run_status(
        self, run: RunState, status: RunStatus, data: Mapping[str, Any] | None = None
    ) -> None:
        """Move the run through its status machine and record it."""
        check_run_transition(RunStatus(run.status), status)
        run.status = status.value
        if status is RunStatus.RUNNING:
            run.started_us = run.started_us or self.now
        if status in TERMINAL_RUN:
            run.ended_us = self.now
            run.started_us = run.started_us or self.now
        self._dirty.add(run.run_id)
        self.record(run, f"run.{_run_event(status)}", status.value, data=data)

    def set_step_status(
        self,
        run: RunState,
        step_id: str,
        status: StepStatus,
        *,
        attempt: int | None = None,
        columns: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        event: str | None = None,
    ) -> None:
        """Move a step through its status machine, record it, and keep the run's counters."""
        old = StepStatus(self.step_status(run.run_id, step_id))
        check_step_transition(old, status)
        key = (run.run_id, step_id)
        self._status[key] = status.value
        cols = self._step_cols[key]
        cols["status"] = status.value
        cols.update(columns or {})
        if status in TERMINAL_STEP:
            cols.setdefault("ended_us", self.now)
            run.open_steps -= 1
            self._dirty.add(run.run_id)
        self.record(
            run,
            f"step.{event or status.value}",
            status.value,
            step_id=step_id,
            attempt=attempt,
            data=data,
        )

    def set_attempt(self, run_id: str, step_id: str, attempt: int, **columns: Any) -> None:
        """Defer an update of an attempt row."""
        self._attempt_cols[(run_id, step_id, attempt)].update(columns)

    def add_attempt(self, row: dict[str, Any]) -> None:
        """Defer the insert of a new attempt row."""
        self._attempt_rows.append(row)

    # -- readiness -----------------------------------------------------------------------
    def start_steps(self, run: RunState, step_ids: Iterable[str]) -> None:
        """Steps whose dependencies are all satisfied: queue them, or skip disabled ones."""
        dag = self.dag(run)
        work = list(step_ids)
        while work:
            step_id = work.pop(0)
            step = dag.steps[step_id]
            if step.disabled:
                self.set_step_status(
                    run, step_id, StepStatus.SKIPPED, data={"reason": "step is disabled"}
                )
                work.extend(self.satisfy(run, step_id))
            else:
                self._queue_step(run, step_id, dag)

    def satisfy(self, run: RunState, step_id: str) -> list[str]:
        """Count a finished dependency against each successor; return those now ready."""
        dag = self.dag(run)
        ready: list[str] = []
        self._preload_steps(run.run_id, dag.successors[step_id])
        for succ in dag.successors[step_id]:
            key = (run.run_id, succ)
            self._deps[key] -= 1
            self._step_cols[key]["deps_remaining"] = self._deps[key]
            if self._deps[key] == 0 and self._status[key] == StepStatus.PENDING.value:
                ready.append(succ)
        return ready

    def _queue_step(self, run: RunState, step_id: str, dag: CompiledDag) -> None:
        step = dag.steps[step_id]
        limit = step.concurrency
        self.set_step_status(run, step_id, StepStatus.QUEUED, attempt=1)
        self._enqueue.append(
            {
                "tenant": run.tenant,
                "run_id": run.run_id,
                "step_id": step_id,
                "attempt": 1,
                "available_us": self.now,
                "enqueued_us": self.now,
                "concurrency_key": f"{run.tenant}/{run.dag_id}/{step_id}" if limit else None,
                "concurrency_limit": limit,
            }
        )

    def requeue(self, queue_id: int, run_id: str, attempt: int, available_us: int) -> None:
        """Defer putting a queue item back for its next attempt."""
        self._requeue.append(
            {"b_id": queue_id, "b_attempt": attempt, "b_available": available_us, "run_id": run_id}
        )

    def dequeue(self, queue_id: int) -> None:
        """Defer removing a finished queue item."""
        self._delete.append(queue_id)

    # -- run outcomes --------------------------------------------------------------------
    def finish_if_done(self, run: RunState) -> None:
        """Complete the run once no step is open."""
        if run.open_steps == 0 and run.status not in _TERMINAL_RUN_VALUES:
            hashes = runs.output_hashes(self.conn, run.run_id)
            hashes.update(self._pending_output_hashes(run.run_id))
            run.outputs_hash = hash_json(hashes)
            self.set_run_status(run, RunStatus.COMPLETED, {"outputsHash": run.outputs_hash})

    def _pending_output_hashes(self, run_id: str) -> dict[str, str]:
        return {
            step: str(cols["outputs_hash"])
            for (rid, step), cols in self._step_cols.items()
            if rid == run_id and cols.get("outputs_hash")
        }

    def terminate(self, run: RunState, status: RunStatus, detail: Mapping[str, Any]) -> None:
        """Fail or cancel a run: stop its running attempts, cancel its open steps, record it."""
        removed = queue.delete_run_items(self.conn, run.run_id)
        leased = {step for step, lease in removed if lease}
        for step_id, attempt in runs.running_attempts(self.conn, run.run_id):
            current = self._status.get((run.run_id, step_id))
            if step_id in leased and current not in _TERMINAL_STEP_VALUES:
                self.set_attempt(
                    run.run_id, step_id, attempt, status="cancelled", ended_us=self.now
                )
        db_open = runs.open_steps(self.conn, run.run_id, [s.value for s in TERMINAL_STEP])
        for step_id, db_status in db_open:
            self._status.setdefault((run.run_id, step_id), db_status)
            if self._status[(run.run_id, step_id)] not in _TERMINAL_STEP_VALUES:
                self.set_step_status(run, step_id, StepStatus.CANCELLED, data=dict(detail))
        if status is RunStatus.FAILED:
            run.error_json = canonical_json(detail.get("error", {}))
        self.set_run_status(run, status, detail)

    # -- writing -------------------------------------------------------------------------
    def flush(self) -> list[LedgerEntry]:
        """Write every deferred change; returns the ledger entries to announce after commit."""
        live = {r for r, s in self.runs.items() if s.status not in _TERMINAL_RUN_VALUES}
        queue.enqueue(self.conn, [r for r in self._enqueue if r["run_id"] in live])
        queue.requeue(
            self.conn,
            [
                {k: v for k, v in r.items() if k != "run_id"}
                for r in self._requeue
                if r["run_id"] in live
            ],
        )
        queue.delete_items(self.conn, self._delete)
        self._flush_steps()
        runs.insert_attempts(self.conn, self._attempt_rows)
        self._flush_attempts()
        runs.save_runs(self.conn, [self.runs[r] for r in sorted(self._dirty)])
        return self.ledger.flush(self.conn)

    def _flush_steps(self) -> None:
        for shape, params in _group(self._step_cols, ("b_run_id", "b_step_id")).items():
            runs.update_steps(self.conn, {c: bindparam(f"v_{c}") for c in shape}, params)

    def _flush_attempts(self) -> None:
        keys = ("b_run_id", "b_step_id", "b_attempt")
        for shape, params in _group(self._attempt_cols, keys).items():
            runs.update_attempts(self.conn, {c: bindparam(f"v_{c}") for c in shape}, params)


_TERMINAL_RUN_VALUES = frozenset(s.value for s in TERMINAL_RUN)
_TERMINAL_STEP_VALUES = frozenset(s.value for s in TERMINAL_STEP)


def _run_event(status: RunStatus) -> str:
    return {"running": "started", "queued": "created"}.get(status.value, status.value)


def _group(
    changes: Mapping[tuple[Any, ...], Mapping[str, Any]], key_names: tuple[str, ...]
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Group row changes by the set of columns they touch, for one executemany per shape."""
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for key, cols in changes.items():
        shape = tuple(sorted(cols))
        params = dict(zip(key_names, key, strict=True))
        params.update({f"v_{c}": v for c, v in cols.items()})
        grouped[shape].append(params)
    return grouped


def parse_json_object(text: str | None) -> dict[str, Any]:
    """Decode a stored JSON object column (None → {})."""
    return dict(json.loads(text)) if text else {}
