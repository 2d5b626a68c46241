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
from stellaorch.store.notify import Topic, notify_committed
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
        self._ended: set[str] = set()  # runs this unit moved to a terminal status
        self._status: dict[StepKey, str] = {}
        self._deps: dict[StepKey, int] = {}
        self._step_cols: dict[StepKey, dict[str, Any]] = defaultdict(dict)
        self._attempt_cols: dict[AttemptKey, dict[str, Any]] = defaultdict(dict)
        self._attempt_rows: list[dict[str, Any]] = []
        self._enqueue: list[dict[str, Any]] = []
        self._requeue: list[dict[str, Any]] = []
        self._delete: list[int] = []
        self._new_runs: list[str] = []
        self._new_outputs: dict[str, dict[str, str]] = defaultdict(dict)
        self._known_tenants: set[str] = set()
        self._resolved: dict[tuple[str, str, str | None], CompiledDag] = {}
        self._new_steps: dict[StepKey, dict[str, Any]] = {}
        # Whether flush queued claimable work, and whether it tells other processes' workers
        # (off when the caller leases that work itself in the same transaction).
        self.queued_work = False
        self.announce_work = True

    # -- loading -------------------------------------------------------------------------
    def adopt(self, state: RunState) -> RunState:
        """Track a run read in this transaction."""
        self.runs[state.run_id] = state
        self.ledger.track(state.run_id, state.ledger_seq, state.ledger_head)
        return state

    def adopt_new(self, state: RunState, step_rows: list[dict[str, Any]]) -> None:
        """Track a run created in this transaction; its rows are inserted at flush."""
        self.adopt(state)
        self._new_runs.append(state.run_id)
        for row in step_rows:
            key = (state.run_id, row["step_id"])
            self._new_steps[key] = row
            self._status[key] = row["status"]
            self._deps[key] = row["deps_remaining"]

    def load(self, run_ids: Iterable[str]) -> None:
        """Read the runs not yet tracked."""
        missing = [r for r in set(run_ids) if r not in self.runs]
        for state in runs.load_runs(self.conn, missing).values():
            self.adopt(state)

    def load_free(self, run_ids: Iterable[str]) -> None:
        """Read the runs not yet tracked that no other transaction holds (skips busy ones)."""
        missing = [r for r in set(run_ids) if r not in self.runs]
        for state in runs.load_free_runs(self.conn, missing).values():
            self.adopt(state)

    def dag(self, run: RunState) -> CompiledDag:
        """The compiled DAG version the run executes."""
        return self.env.catalog.compiled(self.conn, run.tenant, run.dag_id, run.dag_version)

    def resolve(self, tenant: str, dag_id: str, version: str | None) -> CompiledDag:
        """The DAG version a new run uses, looked up once per transaction."""
        key = (tenant, dag_id, version)
        if key not in self._resolved:
            self._resolved[key] = self.env.catalog.resolve(self.conn, tenant, dag_id, version)
        return self._resolved[key]

    def assume(self, run_id: str, step_id: str, status: StepStatus) -> None:
        """State a step's status known without reading it (a lease proves it)."""
        self._status[(run_id, step_id)] = status.value

    def step_status(self, run_id: str, step_id: str) -> str:
        """The step's status as of this unit's changes."""
        key = (run_id, step_id)
        if key not in self._status:
            self.preload([key])
        return self._status[key]

    def preload(self, pairs: Iterable[StepKey]) -> None:
        """Read status and dependency counts of many steps in one query."""
        wanted = [k for k in pairs if k not in self._deps]
        for key, (status, deps) in runs.step_states(self.conn, wanted).items():
            self._status.setdefault(key, status)
            self._deps[key] = deps

    def preload_successors(self, pairs: Iterable[StepKey]) -> None:
        """Read, in one query, the successors of steps about to finish."""
        self.preload(
            (run_id, succ)
            for run_id, step_id in pairs
            for succ in self.dag(self.runs[run_id]).successors[step_id]
        )

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
            self._ended.add(run.run_id)
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

    def record_outputs(self, run_id: str, step_id: str, outputs_hash: str) -> None:
        """Remember a step's outputs hash for the run's outputsHash at completion."""
        self._new_outputs[run_id][step_id] = outputs_hash

    def ensure_tenant(self, tenant: str) -> None:
        """Make sure the tenant has a queue (once per transaction)."""
        if tenant not in self._known_tenants:
            queue.ensure_tenant(self.conn, tenant, self.now)
            self._known_tenants.add(tenant)

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
        self.preload((run.run_id, s) for s in dag.successors[step_id])
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
    def finish_done_runs(self) -> None:
        """Complete every tracked run that has no open step left."""
        done = [
            r
            for r in self.runs.values()
            if r.open_steps == 0 and r.status not in _TERMINAL_RUN_VALUES
        ]
        if not done:
            return
        stored = runs.output_hashes(
            self.conn, [r.run_id for r in done if r.run_id not in self._new_runs]
        )
        for run in done:
            hashes = stored.get(run.run_id, {})
            hashes.update(self._new_outputs.get(run.run_id, {}))
            run.outputs_hash = hash_json(hashes)
            self.set_run_status(run, RunStatus.COMPLETED, {"outputsHash": run.outputs_hash})

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
        self.finish_done_runs()
        self._insert_new()
        self._flush_rows()
        if self.queued_work and self.announce_work:
            notify_committed(self.conn, Topic.WORK)
        new = set(self._new_runs)
        saved = sorted(self._dirty - new)
        self._save(saved)
        self._dirty.clear()
        return self.ledger.flush(self.conn, skip_heads=new | set(saved))

    def settle(self) -> None:
        """Write what a claim in this same transaction and unit must read from the store.

        Queue, step and attempt rows: the claim reads due items, concurrency counts and
        upstream outputs. Run rows and the ledger wait for `flush`, which writes them once;
        the claim learns which runs ended from `ended_runs` (quotas count running runs).
        """
        if self._new_runs:
            raise RuntimeError("settle() is for units that create no runs")
        self.finish_done_runs()
        self._flush_rows()

    def ended_runs(self) -> list[RunState]:
        """Runs this unit moved to a terminal status (not yet written before `flush`)."""
        return [self.runs[r] for r in sorted(self._ended)]

    def _flush_rows(self) -> None:
        """Queue, step and attempt changes; each buffer is emptied once written."""
        live = {r for r, s in self.runs.items() if s.status not in _TERMINAL_RUN_VALUES}
        enqueued = [r for r in self._enqueue if r["run_id"] in live]
        requeued = [
            {k: v for k, v in r.items() if k != "run_id"}
            for r in self._requeue
            if r["run_id"] in live
        ]
        # Deletes go first: `terminate` may already have removed a deferred delete's item, and
        # SQLite hands a deleted highest id to the next insert, so deleting by id after the
        # inserts would remove another run's freshly queued step.
        queue.delete_items(self.conn, self._delete)
        queue.requeue(self.conn, requeued)
        queue.enqueue(self.conn, enqueued)
        self.queued_work = self.queued_work or bool(enqueued or requeued)
        self._flush_steps()
        runs.insert_attempts(self.conn, self._attempt_rows)
        self._flush_attempts()
        self._enqueue, self._requeue, self._delete = [], [], []
        self._attempt_rows = []
        self._step_cols.clear()
        self._attempt_cols.clear()

    def _save(self, run_ids: list[str]) -> None:
        """Write the runs' rows with their chain heads as of the entries appended so far."""
        for run_id in run_ids:
            state, head = self.runs[run_id], self.ledger.head(run_id)
            state.ledger_seq, state.ledger_head = head.seq, head.head
        runs.save_runs(self.conn, [self.runs[r] for r in run_ids])

    def _insert_new(self) -> None:
        """Insert runs and steps created in this unit with their final state and heads."""
        for run_id in self._new_runs:
            state, head = self.runs[run_id], self.ledger.head(run_id)
            state.ledger_seq, state.ledger_head = head.seq, head.head
        runs.insert_runs(self.conn, [self.runs[r] for r in self._new_runs])
        rows = []
        for key, row in self._new_steps.items():
            rows.append({**row, **self._step_cols.pop(key, {})})
        runs.insert_steps(self.conn, rows)

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
