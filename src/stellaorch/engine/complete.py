"""The complete transaction: record attempt outcomes, then lease more work in the same commit."""

from __future__ import annotations

from collections.abc import Sequence

from stellaorch.domain.status import AttemptStatus, StepStatus
from stellaorch.engine import step_metrics
from stellaorch.engine.claim import claim_into
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Claimed, Completed, Outcome
from stellaorch.engine.txn import Txn
from stellaorch.store import Connection, blobs, queue
from stellaorch.store.notify import Topic, notify_committed
from stellaorch.store.step_metrics import link_metrics

_NO_ERROR = {"code": "STEP_FAILED", "message": "", "retryable": False}


def complete_and_claim(
    conn: Connection,
    env: EngineEnv,
    outcomes: Sequence[Outcome],
    worker_id: str,
    limit: int,
    rotation: int = 0,
) -> tuple[Completed, Claimed]:
    """Record outcomes of current leases (refusing the others), then lease up to `limit` more.

    Other processes' workers are woken only when queued work may be left for them: waking
    them for a successor this transaction leased itself costs every one of them a claim.
    """
    txn = Txn(conn, env)
    rejected = _record_outcomes(txn, outcomes)
    claimed = Claimed([], [])
    if limit > 0:
        txn.settle()
        claimed = claim_into(txn, worker_id, limit, rotation)
    entries = txn.flush(announce=False)
    # Fewer leases than room means the claim took every due item it may serve.
    took_all = limit > 0 and len(claimed.leases) < limit and not env.settings.worker_tenants
    if txn.queued_work and not took_all:
        notify_committed(conn, Topic.WORK)
    return Completed(entries, rejected), claimed


def _record_outcomes(txn: Txn, outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Feed the outcomes of current leases to the lifecycle; returns the refused ones."""
    txn.load(o.lease.run_id for o in outcomes)  # runs first, then their queue items
    held = queue.current_leases(txn.conn, [o.lease.queue_id for o in outcomes])
    fresh: list[Outcome] = []
    rejected: list[Outcome] = []
    for o in outcomes:
        if held.get(o.lease.queue_id) == o.lease.lease_id:
            held.pop(o.lease.queue_id)  # a lease completes once, even within one batch
            fresh.append(o)
        else:
            rejected.append(o)
    machine = txn.machine
    for o in fresh:
        machine.assume(o.lease.run_id, o.lease.step_id, StepStatus.RUNNING)
    txn.read_successors(
        (o.lease.run_id, o.lease.step_id) for o in fresh if o.status is AttemptStatus.SUCCEEDED
    )
    for outcome in fresh:
        if machine.is_open(outcome.lease.run_id):
            _record(txn, outcome)
        else:
            rejected.append(outcome)
    return rejected


def _record(txn: Txn, outcome: Outcome) -> None:
    lease = outcome.lease
    logs_ref = txn.put_logs(lease, outcome.logs)
    if outcome.metrics is not None:
        content = step_metrics.encode(outcome.metrics)
        ref = blobs.put_blob(txn.conn, lease.tenant, content, step_metrics.MEDIA_TYPE, txn.now)
        key = (lease.run_id, lease.step_id, lease.attempt)
        link_metrics(txn.conn, lease.tenant, key, ref, txn.now)
    if outcome.status is AttemptStatus.SUCCEEDED:
        txn.machine.succeed(
            lease.run_id,
            lease.step_id,
            lease.attempt,
            lease.queue_id,
            dict(outcome.outputs or {}),
            logs_ref,
            plugin=outcome.plugin,
        )
        return
    error = dict(outcome.error or _NO_ERROR)
    key = (lease.run_id, lease.step_id, lease.attempt)
    txn.fail_attempt(
        key, lease.queue_id, error, outcome.status, logs_ref=logs_ref, plugin=outcome.plugin
    )
