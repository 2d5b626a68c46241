"""The recover, heartbeat and cancel transactions: leases that lapsed, leases kept, runs stopped."""

from __future__ import annotations

from collections.abc import Sequence

from stellaorch.domain.errors import RunNotFound
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.status import AttemptStatus, RunStatus
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Cancelled
from stellaorch.engine.txn import Txn
from stellaorch.store import Connection, queue, runs

_LEASE_EXPIRED = {
    "code": "LEASE_EXPIRED",
    "retryable": True,
    "message": "the worker holding the lease stopped heartbeating",
}


def recover(
    conn: Connection, env: EngineEnv, lease_ids: Sequence[str] | None = None, limit: int = 500
) -> list[LedgerEntry]:
    """Expired leases (or the given ones, at shutdown) become `lost` attempts, then retry."""
    txn = Txn(conn, env)
    if lease_ids is None:
        found = queue.expired_leases(conn, txn.now, limit)
    else:
        found = queue.leases_by_id(conn, lease_ids)
    txn.load(row[3] for row in found)  # runs first, then their queue items
    found = queue.lock_leases(conn, found, txn.now if lease_ids is None else None)
    txn.read_steps((row[3], row[4]) for row in found)
    machine = txn.machine
    for queue_id, _lease, _tenant, run_id, step_id, attempt in found:
        if not machine.is_open(run_id):
            continue
        key = (run_id, step_id, attempt)
        txn.fail_attempt(key, queue_id, _LEASE_EXPIRED, AttemptStatus.LOST)
    return txn.flush()


def heartbeat(conn: Connection, env: EngineEnv, lease_ids: Sequence[str]) -> set[str]:
    """Extend the given leases; returns those still current (the rest were revoked)."""
    expires = env.clock.now_us() + int(env.settings.lease_ttl_seconds * 1_000_000)
    return queue.extend_leases(conn, lease_ids, expires)


def cancel_run(
    conn: Connection, env: EngineEnv, tenant: str, run_id: str, reason: str | None
) -> Cancelled:
    """Cancel a run: queued steps at once, running attempts revoked (their workers stop them)."""
    if runs.get_run(conn, tenant, run_id) is None:
        raise RunNotFound(f"run {run_id} not found")
    txn = Txn(conn, env)
    txn.load([run_id])
    run = txn.machine.runs[run_id]
    if not txn.machine.is_open(run_id):
        return Cancelled(run, True, [])
    txn.machine.end(run_id, RunStatus.CANCELLED, {"reason": reason or "cancelled by request"})
    return Cancelled(run, False, txn.flush())
