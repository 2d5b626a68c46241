"""Queries over runs, step executions and attempts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Row, Select, Update, bindparam, func, select, tuple_, update

from stellaorch.domain.transitions import RunRecord, StepFact
from stellaorch.store.bulk import execute_many, fetch_all, fetch_mappings, insert_rows
from stellaorch.store.dialect import claim_lock, lock_rows, per_dialect
from stellaorch.store.schema import attempts, runs, step_executions

CHUNK = 500  # keeps IN lists well under every driver's bound-parameter limit


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    """Split `items` into slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# The store reads and writes the lifecycle's run records.
RunState = RunRecord


_RUN_FIELDS = [f.name for f in fields(RunRecord)]
_MUTABLE = (
    "status",
    "started_us",
    "ended_us",
    "outputs_hash",
    "error_json",
    "open_steps",
    "ledger_seq",
    "ledger_head",
    "output_bytes",
)


def _run_state(row: Row[Any]) -> RunState:
    return RunState(**{k: row._mapping[k] for k in _RUN_FIELDS})


def insert_runs(conn: Connection, states: Iterable[RunState]) -> None:
    """Insert new run rows."""
    insert_rows(conn, runs, [{k: getattr(s, k) for k in _RUN_FIELDS} for s in states])


_by_tokens = select(runs).where(
    tuple_(runs.c.tenant, runs.c.dag_id, runs.c.run_token).in_(bindparam("keys", expanding=True))
)


def find_by_tokens(
    conn: Connection, keys: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], RunState]:
    """Runs created earlier with these (tenant, dagId, runToken) keys."""
    wanted = sorted(set(keys))
    found: dict[tuple[str, str, str], RunState] = {}
    for start in range(0, len(wanted), CHUNK):
        for row in conn.execute(_by_tokens, {"keys": wanted[start : start + CHUNK]}):
            state = _run_state(row)
            found[(state.tenant, state.dag_id, state.run_token)] = state
    return found


def get_run(conn: Connection, tenant: str, run_id: str) -> RunState | None:
    """One run of the tenant."""
    row = conn.execute(select(runs).where(runs.c.tenant == tenant, runs.c.run_id == run_id)).first()
    return _run_state(row) if row else None


# Locked in run_id order (LockRows sits above the sort), so two units of work that lock
# overlapping sets of runs never wait on each other in a cycle.
_runs_by_id = select(runs).where(runs.c.run_id.in_(bindparam("ids", expanding=True)))
_locked_runs = per_dialect(_runs_by_id.order_by(runs.c.run_id), lock_rows)
_free_runs = per_dialect(_runs_by_id.order_by(runs.c.run_id), claim_lock)


def _read_runs(
    conn: Connection, name: str, query: Callable[[Connection], Select[Any]], run_ids: Iterable[str]
) -> dict[str, RunState]:
    found: dict[str, RunState] = {}
    for part in chunks(sorted(set(run_ids))):
        for row in fetch_mappings(conn, name, query, {"ids": list(part)}):
            state = RunRecord(**{k: row[k] for k in _RUN_FIELDS})
            found[state.run_id] = state
    return found


def load_runs(conn: Connection, run_ids: Iterable[str]) -> dict[str, RunState]:
    """Runs by id for a unit of work, locked on PostgreSQL (waits for other holders)."""
    return _read_runs(conn, "locked_runs", _locked_runs, run_ids)


def load_free_runs(conn: Connection, run_ids: Iterable[str]) -> dict[str, RunState]:
    """Like `load_runs`, but leaves out runs another transaction holds (never waits)."""
    return _read_runs(conn, "free_runs", _free_runs, run_ids)


_save_run = (
    update(runs)
    .where(runs.c.run_id == bindparam("b_run_id"))
    .values({k: bindparam(f"b_{k}") for k in _MUTABLE})
)


def save_runs(conn: Connection, states: Iterable[RunState]) -> None:
    """Write back the mutable columns of the given runs, their ledger head included."""
    params = [{"b_run_id": s.run_id, **{f"b_{k}": getattr(s, k) for k in _MUTABLE}} for s in states]
    execute_many(conn, "save_run", _save_run, params)


def insert_steps(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the step executions of new runs."""
    insert_rows(conn, step_executions, rows)


_se = step_executions.c
_step_states = select(_se.run_id, _se.step_id, _se.status, _se.deps_remaining).where(
    tuple_(_se.run_id, _se.step_id).in_(bindparam("pairs", expanding=True))
)


def step_facts(
    conn: Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StepFact]:
    """Status and dependency count of some (run_id, step_id) steps, across runs."""
    wanted = sorted(set(pairs))
    out: dict[tuple[str, str], StepFact] = {}
    for start in range(0, len(wanted), CHUNK):
        params = {"pairs": wanted[start : start + CHUNK]}
        for run_id, step_id, status, deps in fetch_all(conn, "step_states", _step_states, params):
            out[(run_id, step_id)] = StepFact(status, deps)
    return out


_step_outputs = select(_se.step_id, _se.outputs_json).where(
    _se.run_id == bindparam("run_id"),
    _se.step_id.in_(bindparam("ids", expanding=True)),
    _se.outputs_json.isnot(None),
)


def step_outputs(conn: Connection, run_id: str, step_ids: Iterable[str]) -> dict[str, str]:
    """outputs_json of succeeded steps of a run, by step id."""
    params = {"run_id": run_id, "ids": sorted(set(step_ids))}
    return {sid: out for sid, out in fetch_all(conn, "step_outputs", _step_outputs, params)}


_output_hashes = select(_se.run_id, _se.step_id, _se.outputs_hash).where(
    _se.run_id.in_(bindparam("ids", expanding=True)), _se.outputs_hash.isnot(None)
)


def output_hashes(conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """outputsHash of every succeeded step of some runs: run_id → step_id → hash."""
    out: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    for part in chunks(list(run_ids)):
        params = {"ids": list(part)}
        for run_id, step_id, digest in fetch_all(conn, "output_hashes", _output_hashes, params):
            out[run_id][step_id] = digest
    return out


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


def update_steps(conn: Connection, columns: Sequence[str], params: list[dict[str, Any]]) -> None:
    """Batch update of step executions keyed by b_run_id/b_step_id; column c from v_c."""
    if not params:
        return

    def statement(_conn: Connection) -> Update:
        return (
            update(step_executions)
            .where(
                step_executions.c.run_id == bindparam("b_run_id"),
                step_executions.c.step_id == bindparam("b_step_id"),
            )
            .values({c: bindparam(f"v_{c}") for c in columns})
        )

    execute_many(conn, ("update_steps", tuple(columns)), statement, params)


def insert_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record attempts that just started."""
    insert_rows(conn, attempts, rows)


def update_attempts(conn: Connection, columns: Sequence[str], params: list[dict[str, Any]]) -> None:
    """Batch update of attempts keyed by b_run_id/b_step_id/b_attempt; column c from v_c."""
    if not params:
        return

    def statement(_conn: Connection) -> Update:
        return (
            update(attempts)
            .where(
                attempts.c.run_id == bindparam("b_run_id"),
                attempts.c.step_id == bindparam("b_step_id"),
                attempts.c.attempt == bindparam("b_attempt"),
            )
            .values({c: bindparam(f"v_{c}") for c in columns})
        )

    execute_many(conn, ("update_attempts", tuple(columns)), statement, params)


_attempts_in = select(attempts.c.step_id, attempts.c.attempt).where(
    attempts.c.run_id == bindparam("run_id"), attempts.c.status == bindparam("status")
)


def running_attempts(conn: Connection, run_id: str) -> list[tuple[str, int]]:
    """(step_id, attempt) of the run's attempts still running."""
    params = {"run_id": run_id, "status": "running"}
    return [(s, a) for s, a in fetch_all(conn, "attempts_in", _attempts_in, params)]


def lost_count(conn: Connection, run_id: str, step_id: str) -> int:
    """How many attempts of a step were lost (lease expired)."""
    params = {"run_id": run_id, "status": "lost"}
    rows = fetch_all(conn, "attempts_in", _attempts_in, params)
    return sum(1 for s, _ in rows if s == step_id)


def list_steps(
    conn: Connection,
    tenant: str,
    run_id: str,
    *,
    after: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Step executions of a run in the DAG's deterministic order (a page: after a position)."""
    c = step_executions.c
    query = select(step_executions).where(c.tenant == tenant, c.run_id == run_id)
    if after is not None:
        query = query.where(c.position > after)
    query = query.order_by(c.position).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


def list_attempts(
    conn: Connection, tenant: str, run_id: str, step_ids: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Attempts of a run (or of some of its steps), by step then attempt number."""
    query = select(attempts).where(attempts.c.tenant == tenant, attempts.c.run_id == run_id)
    if step_ids is not None:
        query = query.where(attempts.c.step_id.in_(list(step_ids)))
    query = query.order_by(attempts.c.step_id, attempts.c.attempt)
    return [dict(r._mapping) for r in conn.execute(query)]


@dataclass(frozen=True)
class RunFilter:
    """What a run listing selects: all optional but the tenant."""

    tenant: str
    dag_id: str | None = None
    status: str | None = None
    from_us: int | None = None
    to_us: int | None = None
    dag_version: str | None = None


def _filtered(query: Select[Any], where: RunFilter) -> Select[Any]:
    """The filter's predicates (tenant always) on a query of `runs`."""
    c = runs.c
    query = query.where(c.tenant == where.tenant)
    if where.dag_id is not None:
        query = query.where(c.dag_id == where.dag_id)
    if where.dag_version is not None:
        query = query.where(c.dag_version == where.dag_version)
    if where.status is not None:
        query = query.where(c.status == where.status)
    if where.from_us is not None:
        query = query.where(c.created_us >= where.from_us)
    if where.to_us is not None:
        query = query.where(c.created_us < where.to_us)
    return query


def live_run_ids(conn: Connection, where: RunFilter, live: Sequence[str], limit: int) -> list[str]:
    """select_live_runs: ids of runs in the filter with a `live` status, oldest first."""
    c = runs.c
    query = _filtered(select(c.run_id), where).where(c.status.in_(list(live)))
    query = query.order_by(c.created_us, c.run_id).limit(limit)
    return [str(r) for (r,) in conn.execute(query)]


def count_live_runs(conn: Connection, where: RunFilter, live: Sequence[str]) -> int:
    """count_live_runs: how many runs in the filter have a `live` status."""
    c = runs.c
    query = _filtered(select(func.count()).select_from(runs), where).where(c.status.in_(list(live)))
    return int(conn.execute(query).scalar_one())


def list_runs(
    conn: Connection, where: RunFilter, limit: int, after: tuple[int, str] | None = None
) -> list[RunState]:
    """Runs of a tenant, newest created first, then by run id descending; keyset-paged."""
    c = runs.c
    query = _filtered(select(runs), where)
    if after is not None:
        query = query.where(tuple_(c.created_us, c.run_id) < tuple_(after[0], after[1]))
    query = query.order_by(c.created_us.desc(), c.run_id.desc()).limit(limit)
    return [_run_state(r) for r in conn.execute(query)]


def get_step(conn: Connection, tenant: str, run_id: str, step_id: str) -> dict[str, Any] | None:
    """One step execution of a run."""
    query = select(step_executions).where(
        step_executions.c.tenant == tenant,
        step_executions.c.run_id == run_id,
        step_executions.c.step_id == step_id,
    )
    row = conn.execute(query).first()
    return dict(row._mapping) if row else None


def step_attempts(conn: Connection, tenant: str, run_id: str, step_id: str) -> list[dict[str, Any]]:
    """The attempts of one step, oldest first."""
    query = (
        select(attempts)
        .where(
            attempts.c.tenant == tenant, attempts.c.run_id == run_id, attempts.c.step_id == step_id
        )
        .order_by(attempts.c.attempt)
    )
    return [dict(r._mapping) for r in conn.execute(query)]
