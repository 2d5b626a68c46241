"""One transaction around the run lifecycle: read the facts it needs, apply what it changes.

The transaction scripts (`create`, `claim`, `complete`, `recover`) open a `Txn` on the store
thread's connection, feed events to `txn.machine` (the pure `RunLifecycle`), and `flush`
before commit: the store writer applies the batch of transitions in that same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.lifecycle import RunLifecycle, facts_needed
from stellaorch.domain.spec import CompiledDag
from stellaorch.domain.status import TERMINAL_STEP, AttemptStatus
from stellaorch.domain.transitions import EndFacts, Limits, RunRecord, StepKey
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Lease
from stellaorch.store import Connection, blobs, logs, queue, runs, writer
from stellaorch.store.notify import Topic, notify_committed


class Txn:
    """The reads and writes of one transaction's lifecycle events."""

    def __init__(self, conn: Connection, env: EngineEnv) -> None:
        self.conn = conn
        self.env = env
        self.now = env.clock.now_us()
        limits = Limits(env.settings.max_run_output_bytes, env.settings.lost_attempt_limit)
        self.machine = RunLifecycle(self.now, limits, env.rng)
        self._resolved: dict[tuple[str, str, str | None], CompiledDag] = {}
        self._known_tenants: set[str] = set()
        # Whether the writes made work claimable, to tell other processes' workers.
        self.queued_work = False

    # -- reading -------------------------------------------------------------------------
    def load(self, run_ids: Iterable[str]) -> None:
        """Read (and lock) the runs not yet tracked."""
        self._track(runs.load_runs(self.conn, self._untracked(run_ids)).values())

    def load_free(self, run_ids: Iterable[str]) -> None:
        """Read the runs not yet tracked that no other transaction holds (skips busy ones)."""
        self._track(runs.load_free_runs(self.conn, self._untracked(run_ids)).values())

    def resolve(self, tenant: str, dag_id: str, version: str | None) -> CompiledDag:
        """The DAG version a new run uses, looked up once per transaction."""
        key = (tenant, dag_id, version)
        if key not in self._resolved:
            self._resolved[key] = self.env.catalog.resolve(self.conn, tenant, dag_id, version)
        return self._resolved[key]

    def read_steps(self, keys: Iterable[StepKey]) -> None:
        """Give the machine the stored facts of steps it does not know yet, in one query."""
        wanted = [k for k in keys if not self.machine.knows(k)]
        if wanted:
            self.machine.know(runs.step_facts(self.conn, wanted))

    def read_successors(self, keys: Iterable[StepKey]) -> None:
        """The facts finishing these steps may touch (successors, through skipped ones)."""
        dag = self.machine.dag
        self.read_steps(
            (run_id, succ)
            for run_id, step_id in keys
            for succ in facts_needed(dag(run_id), step_id)
        )

    # -- events that need a stored fact ----------------------------------------------------
    def fail_attempt(
        self,
        key: tuple[str, str, int],
        queue_id: int,
        error: dict[str, Any],
        status: AttemptStatus,
        logs_ref: str | None = None,
        plugin: Mapping[str, Any] | None = None,
    ) -> None:
        """An attempt failed or was lost; the step's earlier lost attempts are read if needed."""
        run_id, step_id, attempt = key
        lost = status is AttemptStatus.LOST
        earlier_lost = 0
        if self.machine.needs_lost_count(run_id, step_id, attempt, error, lost):
            earlier_lost = runs.lost_count(self.conn, run_id, step_id)
        self.machine.fail_attempt(
            run_id,
            step_id,
            attempt,
            queue_id,
            error,
            status,
            logs_ref=logs_ref,
            earlier_lost=earlier_lost,
            plugin=plugin,
        )

    # -- writing -------------------------------------------------------------------------
    def ensure_tenant(self, tenant: str) -> None:
        """Make sure the tenant has a queue (once per transaction)."""
        if tenant not in self._known_tenants:
            queue.ensure_tenant(self.conn, tenant, self.now)
            self._known_tenants.add(tenant)

    def put_logs(self, lease: Lease, text: str) -> str | None:
        """Store an attempt's whole log (its live chunks go: they were a copy); its reference,
        or None when the outcome carries none (then the live chunks are the log)."""
        if not text:
            return None
        ref = blobs.put_blob(self.conn, lease.tenant, text.encode("utf-8"), "text/plain", self.now)
        logs.drop_attempt_chunks(
            self.conn, lease.tenant, lease.run_id, lease.step_id, lease.attempt
        )
        return ref

    def settle(self) -> None:
        """Write the queue changes so far: a claim in this transaction reads them.

        Everything else waits for `flush`, which writes each row once.
        """
        self._answer_machine()
        changes = self.machine.drain_queue()
        writer.apply_rows(self.conn, changes)
        self.queued_work = self.queued_work or changes.queued_work

    def flush(self, *, announce: bool = True) -> list[LedgerEntry]:
        """Apply every change; returns the ledger entries to announce after commit."""
        self._answer_machine()
        changes = self.machine.drain()
        writer.apply(self.conn, changes)
        self.queued_work = self.queued_work or changes.queued_work
        if self.queued_work and announce:
            notify_committed(self.conn, Topic.WORK)
        return changes.entries

    # -- inside --------------------------------------------------------------------------
    def _untracked(self, run_ids: Iterable[str]) -> list[str]:
        return [r for r in set(run_ids) if r not in self.machine.runs]

    def _track(self, states: Iterable[RunRecord]) -> None:
        for state in states:
            dag = self.env.catalog.compiled(
                self.conn, state.tenant, state.dag_id, state.dag_version
            )
            self.machine.track(state, dag)

    def _answer_machine(self) -> None:
        """Close the runs that were ended, then complete those with no open step left."""
        for run_id in self.machine.ending():
            self.machine.close(run_id, self._end_facts(run_id))
        done = self.machine.finishing()
        stored = runs.output_hashes(self.conn, [r for r in done if not self.machine.is_new(r)])
        for run_id in done:
            self.machine.complete(run_id, stored.get(run_id, {}))

    def _end_facts(self, run_id: str) -> EndFacts:
        return EndFacts(
            open_steps=runs.open_steps(self.conn, run_id, [s.value for s in TERMINAL_STEP]),
            leased_steps=frozenset(queue.leased_steps(self.conn, run_id)),
            running_attempts=runs.running_attempts(self.conn, run_id),
        )
