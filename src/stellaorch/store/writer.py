"""The store writer: applies a batch of lifecycle transitions inside the caller's transaction."""

from __future__ import annotations

from sqlalchemy import Connection

from stellaorch.domain.transitions import Transitions, group_by_shape
from stellaorch.store import queue, runs
from stellaorch.store.ledger import append_entries


def apply(conn: Connection, changes: Transitions) -> None:
    """Write every change: new runs and steps, queue, steps, attempts, ledger, run rows."""
    runs.insert_runs(conn, changes.new_runs)
    runs.insert_steps(conn, changes.new_steps)
    apply_rows(conn, changes)
    append_entries(conn, changes.entries)
    runs.save_runs(conn, changes.saved_runs)


def apply_rows(conn: Connection, changes: Transitions) -> None:
    """Write the queue, step and attempt changes (what a later claim must read)."""
    # Deletes go first: SQLite hands a deleted highest id to the next insert, so deleting by
    # id after the inserts could remove another run's freshly queued step.
    queue.drop_runs(conn, changes.drop_run_items)
    queue.delete_items(conn, changes.dequeue)
    queue.requeue(conn, changes.requeue)
    queue.enqueue(conn, changes.enqueue)
    for shape, params in group_by_shape(changes.steps, ("b_run_id", "b_step_id")).items():
        runs.update_steps(conn, shape, params)
    runs.insert_attempts(conn, changes.new_attempts)
    keys = ("b_run_id", "b_step_id", "b_attempt")
    for shape, params in group_by_shape(changes.attempts, keys).items():
        runs.update_attempts(conn, shape, params)
