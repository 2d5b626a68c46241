"""Consistency checks between runs, steps and the queue: work nothing will ever pick up again.

Every open step must be waiting for something that will happen: its predecessors (pending),
a claim (queued, with an unleased queue item, possibly not due before its backoff ends) or
its worker (running, under a lease). A step that waits for nothing leaves its run open
forever; so does a queue item whose step is no longer waiting for it. These hold after
every commit, since state and queue change in one transaction; they are read-only checks.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, select

from stellaorch.domain.status import TERMINAL_RUN, TERMINAL_STEP, StepStatus
from stellaorch.store.schema import queue_items, runs, step_executions

_ENDED_RUN = sorted(s.value for s in TERMINAL_RUN)
_ENDED_STEP = sorted(s.value for s in TERMINAL_STEP)
_WAITING_ON_QUEUE = (StepStatus.QUEUED.value, StepStatus.RUNNING.value)

_s, _q, _r = step_executions.c, queue_items.c, runs.c
_item_of_step = and_(_q.run_id == _s.run_id, _q.step_id == _s.step_id)

# check_open_steps: open steps with their run's status and their queue item, if any
_OPEN_STEPS = (
    select(_s.run_id, _s.step_id, _s.status, _s.deps_remaining, _r.status, _q.id, _q.lease_id)
    .join(runs, _r.run_id == _s.run_id)
    .outerjoin(queue_items, _item_of_step)
    .where(_s.status.not_in(_ENDED_STEP))
    .order_by(_s.run_id, _s.position)
)
# check_open_runs: runs not yet ended
_OPEN_RUNS = select(_r.run_id).where(_r.status.not_in(_ENDED_RUN)).order_by(_r.run_id)
# check_queue_items: queue items with the status of their step and run (None: no such step)
_ITEMS = (
    select(_q.id, _q.run_id, _q.step_id, _s.status, _r.status)
    .outerjoin(step_executions, _item_of_step)
    .outerjoin(runs, _r.run_id == _q.run_id)
    .order_by(_q.id)
)


def find_stranded(conn: Connection) -> list[str]:
    """Maintenance query across tenants: one line per open step, run or queue item stuck."""
    problems, live_runs = _check_steps(conn)
    for (run_id,) in conn.execute(_OPEN_RUNS):
        if run_id not in live_runs:
            problems.append(f"run {run_id}: open, but none of its steps is queued or running")
    problems.extend(_check_items(conn))
    return problems


def _check_steps(conn: Connection) -> tuple[list[str], set[str]]:
    """Problems of open steps, and the runs that have a step a claim or worker will move."""
    problems: list[str] = []
    live: set[str] = set()
    for run_id, step_id, status, deps, run_status, item, lease in conn.execute(_OPEN_STEPS):
        why = _step_problem(status, deps, run_status, item, lease)
        if why:
            problems.append(f"run {run_id} step {step_id}: {why}")
        elif status in _WAITING_ON_QUEUE:
            live.add(run_id)
    return problems, live


def _step_problem(
    status: str, deps: int, run_status: str, item: int | None, lease: str | None
) -> str | None:
    """Why an open step waits for nothing, or None when something will move it."""
    if run_status in _ENDED_RUN:
        return f"{status}, but its run is {run_status}"
    if status == StepStatus.PENDING.value:
        return None if deps > 0 else "pending with every predecessor done, never queued"
    if status == StepStatus.QUEUED.value:
        if item is None:
            return "queued without a queue item"
        return None if lease is None else "queued, but its queue item is leased"
    if status == StepStatus.RUNNING.value:
        return None if lease is not None else "running without a lease"
    return f"unknown status {status}"


def _check_items(conn: Connection) -> list[str]:
    """Queue items nothing will finish: their step is not waiting on the queue."""
    problems: list[str] = []
    for item_id, run_id, step_id, step_status, run_status in conn.execute(_ITEMS):
        if step_status not in _WAITING_ON_QUEUE or run_status in _ENDED_RUN:
            problems.append(
                f"queue item {item_id} (run {run_id} step {step_id}): step is "
                f"{step_status or 'missing'}, run is {run_status or 'missing'}"
            )
    return problems
