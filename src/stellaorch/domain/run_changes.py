"""The checked record of one transaction's changes to runs: statuses, rows, ledger entries.

`RunChanges` is what the lifecycle writes through: every run, step and attempt status
change is checked against the tables in `status`, every change is chained into the run's
ledger, and the rows it touches are collected as `Transitions` for the store writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stellaorch.domain.ledger import EntryDraft, EntryType, LedgerEntry, seal
from stellaorch.domain.spec import CompiledDag
from stellaorch.domain.status import (
    TERMINAL_RUN,
    TERMINAL_STEP,
    AttemptStatus,
    RunStatus,
    StepStatus,
    check_attempt_transition,
    check_run_transition,
    check_step_transition,
)
from stellaorch.domain.transitions import AttemptKey, RunRecord, StepFact, StepKey, Transitions

_RUN_ENTRY = {
    RunStatus.RUNNING: EntryType.RUN_STARTED,
    RunStatus.COMPLETED: EntryType.RUN_COMPLETED,
    RunStatus.FAILED: EntryType.RUN_FAILED,
    RunStatus.CANCELLED: EntryType.RUN_CANCELLED,
}
_STEP_ENTRY = {
    StepStatus.QUEUED: EntryType.STEP_QUEUED,
    StepStatus.RUNNING: EntryType.STEP_RUNNING,
    StepStatus.SUCCEEDED: EntryType.STEP_SUCCEEDED,
    StepStatus.FAILED: EntryType.STEP_FAILED,
    StepStatus.CANCELLED: EntryType.STEP_CANCELLED,
    StepStatus.SKIPPED: EntryType.STEP_SKIPPED,
}


class RunChanges:
    """One transaction's changes to some runs, each checked, chained and collected."""

    def __init__(self, now_us: int) -> None:
        self.now = now_us
        self.runs: dict[str, RunRecord] = {}
        self._dags: dict[str, CompiledDag] = {}
        self._status: dict[StepKey, str] = {}
        self._deps: dict[StepKey, int] = {}
        self._new_runs: list[str] = []
        self._new_steps: dict[StepKey, dict[str, Any]] = {}
        self._rows = Transitions()
        self._entries: list[LedgerEntry] = []
        self._touched: set[str] = set()
        self._ended: set[str] = set()
        self._outputs_json: dict[StepKey, str] = {}

    def track(self, run: RunRecord, dag: CompiledDag) -> None:
        """Follow a run read in this transaction, with the DAG version it executes."""
        self.runs.setdefault(run.run_id, run)
        self._dags.setdefault(run.run_id, dag)

    def dag(self, run_id: str) -> CompiledDag:
        """The DAG version a tracked run executes."""
        return self._dags[run_id]

    def know(self, facts: Mapping[StepKey, StepFact]) -> None:
        """Stored facts of steps; what this transaction already changed stays as it is."""
        for key, fact in facts.items():
            self._status.setdefault(key, fact.status)
            self._deps.setdefault(key, fact.deps_remaining)

    def knows(self, key: StepKey) -> bool:
        """Whether the step's dependency count is known (its facts were given)."""
        return key in self._deps

    def assume(self, run_id: str, step_id: str, status: StepStatus) -> None:
        """State a step's status known without reading it (a lease proves it)."""
        self._status[(run_id, step_id)] = status.value

    def is_new(self, run_id: str) -> bool:
        """Whether the run was created by this transaction (nothing of it is stored yet)."""
        return run_id in self._new_runs

    def outputs_json(self, run_id: str, step_id: str) -> str | None:
        """The outputs of a step that succeeded in this transaction (None: look in the store)."""
        return self._outputs_json.get((run_id, step_id))

    def ended_runs(self) -> list[RunRecord]:
        """Runs this transaction moved to a terminal status."""
        return [self.runs[r] for r in sorted(self._ended)]

    def drain_queue(self) -> Transitions:
        """The queue changes so far, for a claim later in the same transaction to read.

        Step and attempt changes stay: a claim reads only the queue (and the outputs of
        steps that succeeded in this transaction, from `outputs_json`).
        """
        rows, self._rows = self._rows, Transitions()
        self._rows.steps, self._rows.new_attempts = rows.steps, rows.new_attempts
        self._rows.attempts = rows.attempts
        rows.steps, rows.new_attempts, rows.attempts = {}, [], {}
        return self._live_queue(rows)

    def _live_queue(self, rows: Transitions) -> Transitions:
        """Leave out queue items of runs that ended meanwhile."""
        live = {r for r, s in self.runs.items() if s.status not in TERMINAL_RUN}
        rows.enqueue = [r for r in rows.enqueue if r["run_id"] in live]
        rows.requeue = [r for r in rows.requeue if r.pop("run_id") in live]
        return rows

    def drain(self) -> Transitions:
        """Everything left: rows, new runs and steps, ledger entries, changed runs."""
        out, self._rows = self._live_queue(self._rows), Transitions()
        out.new_runs = [self.runs[r] for r in self._new_runs]
        out.new_steps = list(self._new_steps.values())
        out.entries, self._entries = self._entries, []
        new = set(self._new_runs)
        out.saved_runs = [self.runs[r] for r in sorted(self._touched - new)]
        self._new_runs, self._new_steps, self._touched = [], {}, set()
        return out

    def _record(
        self,
        run: RunRecord,
        entry_type: EntryType,
        status: str,
        *,
        step_id: str | None = None,
        attempt: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
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
        entry = seal(draft, run.ledger_seq + 1, run.ledger_head)
        run.ledger_seq, run.ledger_head = entry.seq, entry.entry_hash
        self._entries.append(entry)
        self._touched.add(run.run_id)

    def _set_run_status(
        self, run: RunRecord, status: RunStatus, data: Mapping[str, Any] | None = None
    ) -> None:
        check_run_transition(RunStatus(run.status), status)
        run.status = status.value
        if status is RunStatus.RUNNING:
            run.started_us = run.started_us or self.now
        if status in TERMINAL_RUN:
            run.ended_us = self.now
            run.started_us = run.started_us or self.now
            self._ended.add(run.run_id)
        self._record(run, _RUN_ENTRY[status], status.value, data=data)

    def _set_step_status(
        self,
        run: RunRecord,
        step_id: str,
        status: StepStatus,
        *,
        attempt: int | None = None,
        columns: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        entry_type: EntryType | None = None,
    ) -> None:
        key = (run.run_id, step_id)
        if key not in self._status:
            raise RuntimeError(f"step {step_id} of run {run.run_id} changed before it was read")
        check_step_transition(StepStatus(self._status[key]), status)
        self._status[key] = status.value
        cols = self._new_steps.get(key)
        if cols is None:
            cols = self._rows.steps.setdefault(key, {})
        cols["status"] = status.value
        cols.update(columns or {})
        if status in TERMINAL_STEP:
            cols.setdefault("ended_us", self.now)
            run.open_steps -= 1
        self._record(
            run,
            entry_type or _STEP_ENTRY[status],
            status.value,
            step_id=step_id,
            attempt=attempt,
            data=data,
        )

    def _end_attempt(self, key: AttemptKey, status: AttemptStatus, **columns: Any) -> None:
        # Only a running attempt ends (a current lease or a stored running row proves it).
        check_attempt_transition(AttemptStatus.RUNNING, status)
        cols = self._rows.attempts.setdefault(key, {})
        cols.update(status=status.value, ended_us=self.now, **columns)
