"""Queries over runs, step executions and attempts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update

from stellaorch.store.dialect import lock_rows
from stellaorch.store.schema import attempts, runs, step_executions

CHUNK = 500  # keeps IN lists well under every driver's bound-parameter limit


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    """Split `items` into slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class RunState:
    """A run row, mutable inside one transaction and written back with `save_runs`."""

    run_id: str
    tenant: str
    dag_id: str
    dag_version: str
    run_token: str
    inputs_json: str
    inputs_hash: str
    status: str
    trace_id: str
    trigger: str
    replay_of: str | None
    created_us: int
    started_us: int | None
    ended_us: int | None
    outputs_hash: str | None
    error_json: str | None
    open_steps: int
    ledger_seq: int
    ledger_head: str


_RUN_FIELDS = [f.name for f in fields(RunState)]
_MUTABLE = ("status", "started_us", "ended_us", "outputs_hash", "error_json", "open_steps")


def _run_state(row: Row[Any]) -> RunState:
    return RunState(**{k: row._mapping[k] for k in _RUN_FIELDS})


def insert_run(conn: Connection, state: RunState) -> None:
    """Insert a new run row."""
    conn.execute(runs.insert().values(**{k: getattr(state, k) for k in _RUN_FIELDS}))


def find_by_token(conn: Connection, tenant: str, dag_id: str, token: str) -> RunState | None:
    """The run created earlier with this runToken, if any."""
    query = select(runs).where(
        runs.c.tenant == tenant, runs.c.dag_id == dag_id, runs.c.run_token == token
    )
    row = conn.execute(query).first()
    return _run_state(row) if row else None


def get_run(conn: Connection, tenant: str, run_id: str) -> RunState | None:
    """One run of the tenant."""
    row = conn.execute(select(runs).where(runs.c.tenant == tenant, runs.c.run_id == run_id)).first()
    return _run_state(row) if row else None


def load_runs(conn: Connection, run_ids: Iterable[str]) -> dict[str, RunState]:
    """Runs by id for a unit of work (locked on PostgreSQL); internal, ids come from leases."""
    ids = sorted(set(run_ids))
    found: dict[str, RunState] = {}
    for part in chunks(ids):
        query = lock_rows(conn, select(runs).where(runs.c.run_id.in_(part)))
        for row in conn.execute(query):
            state = _run_state(row)
            found[state.run_id] = state
    return found


_save_run = (
    update(runs)
    .where(runs.c.run_id == bindparam("b_run_id"))
    .values({k: bindparam(f"b_{k}") for k in _MUTABLE})
)


def save_runs(conn: Connection, states: Iterable[RunState]) -> None:
    """Write back the mutable columns of the given runs."""
    params = [{"b_run_id": s.run_id, **{f"b_{k}": getattr(s, k) for k in _MUTABLE}} for s in states]
    if params:
        conn.execute(_save_run, params)


def insert_steps(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the step executions of a new run."""
    conn.execute(step_executions.insert(), rows)


def step_states(
    conn: Connection, run_id: str, step_ids: Iterable[str]
) -> dict[str, tuple[str, int]]:
    """(status, deps_remaining) of some steps of a run."""
    ids = sorted(set(step_ids))
    out: dict[str, tuple[str, int]] = {}
    for part in chunks(ids):
        query = select(
            step_executions.c.step_id, step_executions.c.status, step_executions.c.deps_remaining
        ).where(step_executions.c.run_id == run_id, step_executions.c.step_id.in_(part))
        for step_id, status, deps in conn.execute(query):
            out[step_id] = (status, deps)
    return out


def step_outputs(conn: Connection, run_id: str, step_ids: Iterable[str]) -> dict[str, str]:
    """outputs_json of succeeded steps of a run, by step id."""
    ids = sorted(set(step_ids))
    query = select(step_executions.c.step_id, step_executions.c.outputs_json).where(
        step_executions.c.run_id == run_id,
        step_executions.c.step_id.in_(ids),
        step_executions.c.outputs_json.isnot(None),
    )
    return {sid: out for sid, out in conn.execute(query)}


def output_hashes(conn: Connection, run_id: str) -> dict[str, str]:
    """outputsHash of every succeeded step of a run."""
    query = select(step_executions.c.step_id, step_executions.c.outputs_hash).where(
        step_executions.c.run_id == run_id, step_executions.c.outputs_hash.isnot(None)
    )
    return {sid: h for sid, h in conn.execute(query)}


def open_steps(conn: Connection, run_id: str, terminal: Iterable[str]) -> list[tuple[str, str]]:
    """(step_id, status) of the run's steps not yet in a terminal status, in order."""
    query = (
        select(step_executions.c.step_id, step_executions.c.status)
        .where(
            step_executions.c.run_id == run_id,
            step_executions.c.status.not_in(list(terminal)),
        )
        .order_by(step_executions.c.position)
    )
    return [(sid, st) for sid, st in conn.execute(query)]


def update_steps(conn: Connection, values: Mapping[str, Any], params: list[dict[str, Any]]) -> None:
    """Batch update of step executions keyed by b_run_id/b_step_id; `values` maps columns."""
    if not params:
        return
    stmt = (
        update(step_executions)
        .where(
            step_executions.c.run_id == bindparam("b_run_id"),
            step_executions.c.step_id == bindparam("b_step_id"),
        )
        .values(dict(values))
    )
    conn.execute(stmt, params)


def insert_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record attempts that just started."""
    if rows:
        conn.execute(attempts.insert(), rows)


def update_attempts(
    conn: Connection, values: Mapping[str, Any], params: list[dict[str, Any]]
) -> None:
    """Batch update of attempts keyed by b_run_id/b_step_id/b_attempt."""
    if not params:
        return
    stmt = (
        update(attempts)
        .where(
            attempts.c.run_id == bindparam("b_run_id"),
            attempts.c.step_id == bindparam("b_step_id"),
            attempts.c.attempt == bindparam("b_attempt"),
        )
        .values(dict(values))
    )
    conn.execute(stmt, params)


def running_attempts(conn: Connection, run_id: str) -> list[tuple[str, int]]:
    """(step_id, attempt) of the run's attempts still running."""
    query = select(attempts.c.step_id, attempts.c.attempt).where(
        attempts.c.run_id == run_id, attempts.c.status == "running"
    )
    return [(s, a) for s, a in conn.execute(query)]


def lost_count(conn: Connection, run_id: str, step_id: str) -> int:
    """How many attempts of a step were lost (lease expired)."""
    query = select(attempts.c.attempt).where(
        attempts.c.run_id == run_id, attempts.c.step_id == step_id, attempts.c.status == "lost"
    )
    return len(conn.execute(query).all())


def list_steps(conn: Connection, tenant: str, run_id: str) -> list[dict[str, Any]]:
    """Every step execution of a run, in the DAG's deterministic order."""
    query = (
        select(step_executions)
        .where(step_executions.c.tenant == tenant, step_executions.c.run_id == run_id)
        .order_by(step_executions.c.position)
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def list_attempts(conn: Connection, tenant: str, run_id: str) -> list[dict[str, Any]]:
    """Every attempt of a run, by step then attempt number."""
    query = (
        select(attempts)
        .where(attempts.c.tenant == tenant, attempts.c.run_id == run_id)
        .order_by(attempts.c.step_id, attempts.c.attempt)
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def list_runs(
    conn: Connection,
    tenant: str,
    *,
    dag_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[RunState]:
    """Runs of a tenant, newest first, then by run id."""
    query = select(runs).where(runs.c.tenant == tenant)
    if dag_id is not None:
        query = query.where(runs.c.dag_id == dag_id)
    if status is not None:
        query = query.where(runs.c.status == status)
    query = query.order_by(runs.c.created_us.desc(), runs.c.run_id.desc()).limit(limit)
    return [_run_state(r) for r in conn.execute(query)]
