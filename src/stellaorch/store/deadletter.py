"""Dead letter reads: a tenant's failed steps with their runs, and which runs were replayed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select

from stellaorch.store.runs import chunks
from stellaorch.store.schema import runs, step_executions


@dataclass(frozen=True)
class FailedStep:
    """A step that ended failed, with the run it belongs to."""

    run_id: str
    step_id: str
    dag_id: str
    dag_version: str
    ended_us: int | None
    error_json: str | None


def failed_steps(conn: Connection, tenant: str) -> Iterator[FailedStep]:
    """select_failed_steps: the tenant's failed steps, oldest end first (streamed)."""
    s, r = step_executions.c, runs.c
    query = (
        select(s.run_id, s.step_id, r.dag_id, r.dag_version, s.ended_us, s.error_json)
        .join(runs, r.run_id == s.run_id)
        .where(s.tenant == tenant, s.status == "failed")
        .order_by(s.ended_us, s.run_id, s.step_id)
    )
    for row in conn.execute(query):
        yield FailedStep(*row)


def replayed(conn: Connection, tenant: str, run_ids: Sequence[str]) -> set[str]:
    """select_replayed: which of these runs some run already replays."""
    found: set[str] = set()
    for part in chunks(list(run_ids)):
        query = select(runs.c.replay_of).where(runs.c.tenant == tenant, runs.c.replay_of.in_(part))
        found.update(str(v) for (v,) in conn.execute(query))
    return found
