"""Named queries of the ledger export and the run check: a window's runs, their rows, entries."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import Connection, select, tuple_

from stellaorch.store.runs import RunState
from stellaorch.store.schema import attempts, ledger_entries, runs, step_executions

Cursor = tuple[int, str]  # (startedUtc in ms, runId) of the last run read
EntryRow = tuple[str, str, str]  # runId, body, entryHash
Window = tuple[int, int]  # [from_us, to_us) of startedUtc

_r = runs.c
# Order by startedUtc as printed (milliseconds), then runId, so readers see the order.
_started_ms = _r.started_us // 1000
_RUN_FIELDS = [f.name for f in fields(RunState)]


def read_started_runs(
    conn: Connection, tenant: str, window: Window, after: Cursor | None, limit: int
) -> list[RunState]:
    """read_started_runs: a page of the tenant's runs started in [from, to), ms then runId."""
    query = select(runs).where(
        _r.tenant == tenant,
        _r.started_us >= window[0],
        _r.started_us < window[1],
    )
    if after is not None:
        query = query.where(tuple_(_started_ms, _r.run_id) > tuple_(after[0], after[1]))
    query = query.order_by(_started_ms, _r.run_id).limit(limit)
    return [RunState(**{k: row._mapping[k] for k in _RUN_FIELDS}) for row in conn.execute(query)]


def read_steps_of(conn: Connection, tenant: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """read_steps_of: step executions of some runs, by run then DAG order."""
    se = step_executions.c
    query = (
        select(step_executions)
        .where(se.tenant == tenant, se.run_id.in_(run_ids))
        .order_by(se.run_id, se.position)
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def read_attempts_of(conn: Connection, tenant: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """read_attempts_of: attempts of some runs, by run, step and attempt number."""
    a = attempts.c
    query = (
        select(attempts)
        .where(a.tenant == tenant, a.run_id.in_(run_ids))
        .order_by(a.run_id, a.step_id, a.attempt)
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def read_entries_of(conn: Connection, tenant: str, run_ids: list[str]) -> list[EntryRow]:
    """read_entries_of: ledger entries (runId, body, entryHash) of some runs, in chain order."""
    le = ledger_entries.c
    query = (
        select(le.run_id, le.body, le.entry_hash)
        .where(le.tenant == tenant, le.run_id.in_(run_ids))
        .order_by(le.run_id, le.seq)
    )
    return [(run_id, body, entry_hash) for run_id, body, entry_hash in conn.execute(query)]
