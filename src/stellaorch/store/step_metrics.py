"""Where each attempt's metrics document is: its `sha256:` blob reference, per tenant."""

from __future__ import annotations

from sqlalchemy import Connection, select

from stellaorch.store.dialect import insert_ignore
from stellaorch.store.schema import step_metrics

_m = step_metrics.c


def link_metrics(
    conn: Connection, tenant: str, key: tuple[str, str, int], ref: str, now_us: int
) -> None:
    """Record that attempt `key` (run, step, attempt) has the metrics blob `ref` (once)."""
    run_id, step_id, attempt = key
    row = {
        "tenant": tenant,
        "run_id": run_id,
        "step_id": step_id,
        "attempt": attempt,
        "metrics_ref": ref,
        "recorded_us": now_us,
    }
    conn.execute(
        insert_ignore(conn, step_metrics, ["tenant", "run_id", "step_id", "attempt"]), [row]
    )


def metrics_refs(
    conn: Connection, tenant: str, run_id: str, step_ids: list[str] | None = None
) -> dict[tuple[str, int], str]:
    """The metrics references of a run's attempts by (step, attempt); only the tenant's own."""
    query = select(_m.step_id, _m.attempt, _m.metrics_ref).where(
        _m.tenant == tenant, _m.run_id == run_id
    )
    if step_ids is not None:
        query = query.where(_m.step_id.in_(step_ids))
    return {(str(r[0]), int(r[1])): str(r[2]) for r in conn.execute(query)}


def metrics_refs_of(
    conn: Connection, tenant: str, run_ids: list[str]
) -> dict[tuple[str, str, int], str]:
    """The metrics references of several runs' attempts by (run, step, attempt)."""
    query = select(_m.run_id, _m.step_id, _m.attempt, _m.metrics_ref).where(
        _m.tenant == tenant, _m.run_id.in_(run_ids)
    )
    return {(str(r[0]), str(r[1]), int(r[2])): str(r[3]) for r in conn.execute(query)}
