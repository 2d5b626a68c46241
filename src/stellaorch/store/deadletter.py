"""Dead letter queries: a tenant's failed steps with their runs, which runs were replayed,
and the acknowledgements of handled groups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from stellaorch.store.runs import chunks
from stellaorch.store.schema import deadletter_acks, runs, step_executions


@dataclass(frozen=True)
class FailedStep:
    """A step that ended failed, with the run it belongs to."""

    run_id: str
    step_id: str
    dag_id: str
    dag_version: str
    ended_us: int | None
    error_json: str | None


@dataclass(frozen=True)
class FailedScope:
    """Which failed steps a query selects: optional DAG, version and end-time window."""

    dag_id: str | None = None
    version: str | None = None
    from_us: int | None = None  # ended at or after
    to_us: int | None = None  # ended before


def failed_steps(
    conn: Connection, tenant: str, scope: FailedScope | None = None
) -> Iterator[FailedStep]:
    """select_failed_steps: the tenant's failed steps in scope, oldest end first (streamed)."""
    s, r = step_executions.c, runs.c
    scope = scope or FailedScope()
    query = (
        select(s.run_id, s.step_id, r.dag_id, r.dag_version, s.ended_us, s.error_json)
        .join(runs, r.run_id == s.run_id)
        .where(s.tenant == tenant, s.status == "failed")
    )
    if scope.dag_id is not None:
        query = query.where(r.dag_id == scope.dag_id)
    if scope.version is not None:
        query = query.where(r.dag_version == scope.version)
    if scope.from_us is not None:
        query = query.where(s.ended_us >= scope.from_us)
    if scope.to_us is not None:
        query = query.where(s.ended_us < scope.to_us)
    query = query.order_by(s.ended_us, s.run_id, s.step_id)
    for row in conn.execute(query):
        yield FailedStep(*row)


def replayed(conn: Connection, tenant: str, run_ids: Sequence[str]) -> set[str]:
    """select_replayed: which of these runs some run already replays."""
    found: set[str] = set()
    for part in chunks(list(run_ids)):
        query = select(runs.c.replay_of).where(runs.c.tenant == tenant, runs.c.replay_of.in_(part))
        found.update(str(v) for (v,) in conn.execute(query))
    return found


def acked_until(conn: Connection, tenant: str) -> dict[str, int]:
    """select_acks: per error code, the end time up to which the tenant acknowledged it."""
    a = deadletter_acks.c
    query = select(a.code, a.acked_until_us).where(a.tenant == tenant)
    return {str(code): int(until) for code, until in conn.execute(query)}


def put_ack(
    conn: Connection, tenant: str, code: str, until_us: int, actor: str, reason: str
) -> None:
    """upsert_ack: acknowledge a group's failures up to `until_us` (replaces an older ack)."""
    a = deadletter_acks.c
    conn.execute(delete(deadletter_acks).where(a.tenant == tenant, a.code == code))
    row = {"tenant": tenant, "code": code, "acked_until_us": until_us}
    conn.execute(insert(deadletter_acks).values(**row, actor=actor, reason=reason))
