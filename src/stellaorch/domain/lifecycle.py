"""The run lifecycle as one pure state machine: events in, transitions out.

The engine's transaction scripts read what an event needs from the store (the runs, the
facts of the steps it touches, the DAG), feed the events here, and hand `drain()`'s
transitions to the store writer, all in one transaction. Every status change is checked
against the tables in `status`; every ledger entry is chained here; a step is queued only
once all its predecessors have succeeded (or were skipped).

Two events need more facts than a step's neighbours: ending a run (its open steps, leases
and attempts) and completing one (its steps' output hashes). The machine marks those runs
(`ending`, `finishing`) and the script answers with `close` and `complete`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stellaorch.domain.canonical import canonical_json, hash_json, sha256_hex
from stellaorch.domain.ledger import EntryType
from stellaorch.domain.providers import format_utc
from stellaorch.domain.resume import ReusedStep
from stellaorch.domain.retry import backoff_delay_ms
from stellaorch.domain.run_changes import RunChanges
from stellaorch.domain.spec import CompiledDag
from stellaorch.domain.status import (
    TERMINAL_RUN,
    TERMINAL_STEP,
    AttemptStatus,
    RunStatus,
    StepStatus,
)
from stellaorch.domain.transitions import (
    EndFacts,
    Limits,
    RunRecord,
    Transitions,
)

# A success whose outputs overrun the run's max_run_output_bytes fails with this code.
OUTPUT_LIMIT_EXCEEDED = "OUTPUT_LIMIT_EXCEEDED"


def facts_needed(dag: CompiledDag, step_id: str) -> set[str]:
    """The steps whose facts finishing `step_id` may touch: successors, through skipped ones."""
    needed: set[str] = set()
    work = list(dag.successors[step_id])
    while work:
        succ = work.pop()
        if succ not in needed:
            needed.add(succ)
            if dag.steps[succ].disabled:
                work.extend(dag.successors[succ])
    return needed


class RunLifecycle(RunChanges):
    """The lifecycle rules applied to one transaction's runs; no I/O, no clock but `now_us`."""

    def __init__(self, now_us: int, limits: Limits, rng: random.Random) -> None:
        super().__init__(now_us)
        self._limits = limits
        self._rng = rng
        self._ending: dict[str, tuple[RunStatus, dict[str, Any]]] = {}
        self._new_outputs: dict[str, dict[str, str]] = {}

    def is_open(self, run_id: str) -> bool:
        """Whether the run still takes events: not ended, and not about to end."""
        run = self.runs[run_id]
        return run.status not in TERMINAL_RUN and run_id not in self._ending

    # -- events ----------------------------------------------------------------------------
    def create(
        self,
        run: RunRecord,
        dag: CompiledDag,
        data: Mapping[str, Any],
        reused: Sequence[ReusedStep] = (),
    ) -> None:
        """A new run: all its steps pending, `reused` ones succeeded, the ready ones started."""
        self.track(run, dag)
        self._new_runs.append(run.run_id)
        for position, step_id in enumerate(dag.order):
            key = (run.run_id, step_id)
            deps = len(dag.predecessors[step_id])
            self._new_steps[key] = {
                "run_id": run.run_id,
                "step_id": step_id,
                "tenant": run.tenant,
                "position": position,
                "status": StepStatus.PENDING.value,
                "attempt": 0,
                "deps_remaining": deps,
            }
            self._status[key], self._deps[key] = StepStatus.PENDING.value, deps
        self._record(run, EntryType.RUN_CREATED, RunStatus.QUEUED.value, data=data)
        self._start_steps(run, self._reuse(run, reused) if reused else dag.roots)

    def _reuse(self, run: RunRecord, reused: Sequence[ReusedStep]) -> list[str]:
        """Record kept steps (DAG order) succeeded with their earlier outputs; the steps
        then ready, in DAG order."""
        for step in reused:
            self._set_step_status(
                run,
                step.step_id,
                StepStatus.SUCCEEDED,
                entry_type=EntryType.STEP_REUSED,
                columns={"outputs_json": step.outputs_json, "outputs_hash": step.outputs_hash},
                data={"outputsHash": step.outputs_hash, "reusedFrom": step.from_run},
            )
            run.output_bytes += len(step.outputs_json.encode("utf-8"))
            self._new_outputs.setdefault(run.run_id, {})[step.step_id] = step.outputs_hash
            self._outputs_json[(run.run_id, step.step_id)] = step.outputs_json
            self._satisfy(run, step.step_id)
        keys = [(run.run_id, s) for s in self._dags[run.run_id].order]
        return [k[1] for k in keys if self._status[k] == StepStatus.PENDING and not self._deps[k]]

    def start_attempt(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        *,
        lease_id: str,
        worker_id: str,
        inputs_hash: str | None,
        secret_versions: Mapping[str, int] | None = None,
    ) -> None:
        """A worker leased the step: the step runs, and so does its run.

        The entry names the secrets the attempt resolved and their versions, never a value.
        """
        run = self.runs[run_id]
        if run.status == RunStatus.QUEUED:
            self._set_run_status(run, RunStatus.RUNNING)
        cols: dict[str, Any] = {"attempt": attempt, "inputs_hash": inputs_hash}
        if attempt == 1:
            cols["started_us"] = self.now
        self._set_step_status(
            run,
            step_id,
            StepStatus.RUNNING,
            attempt=attempt,
            columns=cols,
            data=_start_data(worker_id, secret_versions),
        )
        self._rows.new_attempts.append(
            {
                "run_id": run_id,
                "step_id": step_id,
                "attempt": attempt,
                "tenant": run.tenant,
                "lease_id": lease_id,
                "worker_id": worker_id,
                "status": AttemptStatus.RUNNING.value,
                "started_us": self.now,
                "inputs_hash": inputs_hash,
            }
        )

    def succeed(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        queue_id: int,
        outputs: Mapping[str, Any],
        logs_ref: str | None,
        *,
        plugin: Mapping[str, Any] | None = None,
    ) -> None:
        """The attempt succeeded: keep its outputs, start the successors it completes.

        `plugin` (the identity of the code that ran) goes on the attempt and its entry.
        """
        run = self.runs[run_id]
        outputs_json = canonical_json(outputs)
        size = len(outputs_json.encode("utf-8"))
        limit = self._limits.max_run_output_bytes
        if run.output_bytes + size > limit:
            message = (
                f"step outputs of {size} bytes would bring the run's stored outputs to "
                f"{run.output_bytes + size} bytes, over the limit of {limit}; use an artifact"
            )
            # Not retryable: the run's earlier outputs never shrink, a retry could only fail.
            error = {"code": OUTPUT_LIMIT_EXCEEDED, "message": message, "retryable": False}
            self.fail_attempt(
                *(run_id, step_id, attempt, queue_id, error, AttemptStatus.FAILED),
                logs_ref=logs_ref,
                plugin=plugin,
            )
            return
        run.output_bytes += size
        outputs_hash = "sha256:" + sha256_hex(outputs_json)  # hash_json, without encoding twice
        self._end_attempt(
            (run_id, step_id, attempt),
            AttemptStatus.SUCCEEDED,
            outputs_hash=outputs_hash,
            logs_ref=logs_ref,
            **_plugin_column(plugin),
        )
        columns = {
            "outputs_json": outputs_json,
            "outputs_hash": outputs_hash,
            "logs_ref": logs_ref,
            "error_json": None,
        }
        self._set_step_status(
            run,
            step_id,
            StepStatus.SUCCEEDED,
            attempt=attempt,
            columns=columns,
            data={"outputsHash": outputs_hash, **_plugin_data(plugin)},
        )
        self._new_outputs.setdefault(run_id, {})[step_id] = outputs_hash
        self._outputs_json[(run_id, step_id)] = outputs_json
        self._rows.dequeue.append(queue_id)
        self._start_steps(run, self._satisfy(run, step_id))

    def needs_lost_count(
        self, run_id: str, step_id: str, attempt: int, error: Mapping[str, Any], lost: bool
    ) -> bool:
        """Whether deciding on a retry needs the number of the step's earlier lost attempts."""
        policy = self._dags[run_id].steps[step_id].retry
        return bool(error.get("retryable") or lost) and attempt >= policy.max_attempts

    def fail_attempt(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        queue_id: int,
        error: Mapping[str, Any],
        status: AttemptStatus,
        *,
        logs_ref: str | None = None,
        earlier_lost: int = 0,
        plugin: Mapping[str, Any] | None = None,
    ) -> None:
        """The attempt failed, timed out or was lost: retry after backoff, or fail the run."""
        run = self.runs[run_id]
        extra = {"logs_ref": logs_ref} if logs_ref is not None else {}
        error_json = canonical_json(error)
        extra.update(_plugin_column(plugin))
        self._end_attempt((run_id, step_id, attempt), status, error_json=error_json, **extra)
        ran = _plugin_data(plugin)
        if self._may_retry(run_id, step_id, attempt, error, status, earlier_lost):
            self._retry(run, step_id, attempt, queue_id, dict(error), status, ran)
            return
        self._rows.dequeue.append(queue_id)
        self._set_step_status(
            run,
            step_id,
            StepStatus.FAILED,
            attempt=attempt,
            columns={"error_json": error_json},
            data={"error": dict(error), "attemptStatus": status.value, **ran},
        )
        self.end(run_id, RunStatus.FAILED, {"error": {**error, "stepId": step_id}})

    def end(self, run_id: str, status: RunStatus, detail: Mapping[str, Any]) -> None:
        """Fail or cancel the run; it takes no more events, and `close` finishes the job."""
        if status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ValueError(f"a run ends early as failed or cancelled, not {status.value}")
        if self.is_open(run_id):
            self._ending[run_id] = (status, dict(detail))

    # -- answers to what the machine asked for --------------------------------------------
    def ending(self) -> list[str]:
        """Runs `end` marked, waiting for `close` with their facts."""
        return sorted(self._ending)

    def close(self, run_id: str, facts: EndFacts) -> None:
        """End a marked run: stop its leased attempts, cancel its open steps, record it."""
        status, detail = self._ending.pop(run_id)
        run = self.runs[run_id]
        self._rows.drop_run_items.append(run_id)
        for step_id, attempt in facts.running_attempts:
            current = self._status.get((run_id, step_id))
            if step_id in facts.leased_steps and current not in TERMINAL_STEP:
                self._end_attempt((run_id, step_id, attempt), AttemptStatus.CANCELLED)
        for step_id, stored in facts.open_steps:
            key = (run_id, step_id)
            self._status.setdefault(key, stored)
            if self._status[key] not in TERMINAL_STEP:
                self._set_step_status(run, step_id, StepStatus.CANCELLED, data=detail)
        if status is RunStatus.FAILED:
            run.error_json = canonical_json(detail.get("error", {}))
        self._set_run_status(run, status, detail)

    def finishing(self) -> list[str]:
        """Open runs with no open step left, waiting for `complete` with their output hashes."""
        return sorted(
            r.run_id for r in self.runs.values() if r.open_steps == 0 and self.is_open(r.run_id)
        )

    def complete(self, run_id: str, stored_hashes: Mapping[str, str]) -> None:
        """Complete a finished run; its outputsHash covers every step's outputs hash."""
        run = self.runs[run_id]
        hashes = {**stored_hashes, **self._new_outputs.get(run_id, {})}
        run.outputs_hash = hash_json(hashes)
        self._set_run_status(run, RunStatus.COMPLETED, {"outputsHash": run.outputs_hash})

    # -- output ----------------------------------------------------------------------------
    def drain(self) -> Transitions:
        """Everything left: rows, new runs and steps, ledger entries, changed runs."""
        if self._ending:
            raise RuntimeError(f"runs {sorted(self._ending)} were ended but not closed")
        return super().drain()

    # -- inside ----------------------------------------------------------------------------
    def _start_steps(self, run: RunRecord, step_ids: Iterable[str]) -> None:
        """Steps whose dependencies are all satisfied: queue them, or skip disabled ones."""
        dag = self._dags[run.run_id]
        work = list(step_ids)
        while work:
            step_id = work.pop(0)
            if dag.steps[step_id].disabled:
                self._set_step_status(
                    run, step_id, StepStatus.SKIPPED, data={"reason": "step is disabled"}
                )
                work.extend(self._satisfy(run, step_id))
            else:
                self._queue_step(run, step_id, dag)

    def _satisfy(self, run: RunRecord, step_id: str) -> list[str]:
        """Count a finished dependency against each successor; return those now ready."""
        ready: list[str] = []
        for succ in self._dags[run.run_id].successors[step_id]:
            key = (run.run_id, succ)
            if key not in self._deps:
                raise RuntimeError(f"step {succ} of run {run.run_id} was not read before use")
            self._deps[key] -= 1
            cols = self._new_steps.get(key)
            if cols is None:
                cols = self._rows.steps.setdefault(key, {})
            cols["deps_remaining"] = self._deps[key]
            if self._deps[key] == 0 and self._status[key] == StepStatus.PENDING:
                ready.append(succ)
        return ready

    def _queue_step(self, run: RunRecord, step_id: str, dag: CompiledDag) -> None:
        limit = dag.steps[step_id].concurrency
        self._set_step_status(run, step_id, StepStatus.QUEUED, attempt=1)
        self._rows.enqueue.append(
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

    def _may_retry(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        error: Mapping[str, Any],
        status: AttemptStatus,
        earlier_lost: int,
    ) -> bool:
        """Retryable errors retry up to maxAttempts; lost attempts do not use up that budget."""
        lost = status is AttemptStatus.LOST
        if not (error.get("retryable") or lost):
            return False
        max_attempts = self._dags[run_id].steps[step_id].retry.max_attempts
        if attempt < max_attempts:
            return True
        allowance = min(earlier_lost + (1 if lost else 0), self._limits.lost_attempt_limit)
        return attempt < max_attempts + allowance

    def _retry(
        self,
        run: RunRecord,
        step_id: str,
        attempt: int,
        queue_id: int,
        error: dict[str, Any],
        status: AttemptStatus,
        ran: Mapping[str, Any],
    ) -> None:
        policy = self._dags[run.run_id].steps[step_id].retry
        lost = status is AttemptStatus.LOST
        delay_ms = 0 if lost else backoff_delay_ms(policy, attempt, self._rng)
        eligible = self.now + delay_ms * 1000
        self._rows.requeue.append(
            {
                "b_id": queue_id,
                "b_attempt": attempt + 1,
                "b_available": eligible,
                "run_id": run.run_id,
            }
        )
        self._set_step_status(
            run,
            step_id,
            StepStatus.QUEUED,
            attempt=attempt + 1,
            entry_type=EntryType.STEP_RETRYING,
            columns={"error_json": canonical_json(error)},
            data={
                "error": error,
                "attemptStatus": status.value,
                "nextEligibleUtc": format_utc(eligible),
                **ran,
            },
        )


def _plugin_column(plugin: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attempt row's `plugin_json` column, when the attempt knows its plugin."""
    return {} if plugin is None else {"plugin_json": canonical_json(plugin)}


def _plugin_data(plugin: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's `plugin` field; absent (as in entries before it existed) when unknown."""
    return {} if plugin is None else {"plugin": dict(plugin)}


def _start_data(worker_id: str, secret_versions: Mapping[str, int] | None) -> dict[str, Any]:
    """An attempt-start entry's data: the worker, and `secrets` {name: version} when used."""
    if not secret_versions:
        return {"workerId": worker_id}
    return {"workerId": worker_id, "secrets": dict(sorted(secret_versions.items()))}
