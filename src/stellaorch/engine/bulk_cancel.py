"""Bulk cancel: a tenant's queued or running runs matching a filter, cancelled with a reason.

Bounded: one call cancels at most MAX_BULK_RUNS runs, oldest first, and says how many match
beyond them (repeat the call for those). Each run is cancelled in its own transaction, as
`run cancel` does (a run that ended meanwhile is left as it is); the call is audited once as
`run.bulk_cancel` with its filter and the runs cancelled. A dry run only lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.limits import MAX_BULK_RUNS
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.engine.runs import RunFilter, RunService
from stellaorch.store import Connection
from stellaorch.store import runs as store

LIVE = ("queued", "running")


@dataclass(frozen=True)
class BulkCancelled:
    """The runs cancelled (or, dry, that would be), and how many more match."""

    run_ids: list[str]
    remaining: int
    dry_run: bool


def check_filter(where: RunFilter) -> tuple[str, ...]:
    """The live statuses the filter selects; refuses what cannot be cancelled."""
    if where.status is not None and where.status not in LIVE:
        raise ValidationError(f"only queued or running runs can be cancelled, not {where.status}")
    if where.dag_version is not None and where.dag_id is None:
        raise ValidationError("a version filter needs a dagId")
    return (where.status,) if where.status else LIVE


async def cancel_matching(
    env: EngineEnv, runs: RunService, where: RunFilter, operator: Operator, *, dry_run: bool = False
) -> BulkCancelled:
    """Cancel (or, dry, list) the matching live runs, at most MAX_BULK_RUNS, oldest first."""
    if not operator.reason.strip():
        raise ValidationError("a bulk cancel needs a reason")
    live = check_filter(where)

    def read(conn: Connection) -> tuple[list[str], int]:
        ids = store.live_run_ids(conn, where, live, MAX_BULK_RUNS)
        return ids, store.count_live_runs(conn, where, live) - len(ids)

    ids, remaining = await env.db.read(read)
    if dry_run:
        return BulkCancelled(ids, remaining, True)
    cancelled = [
        r for r in ids if not (await runs.cancel(where.tenant, r, operator.reason)).rejected
    ]
    details = {
        "filter": {
            "dagId": where.dag_id,
            "version": where.dag_version,
            "status": where.status,
            "fromUs": where.from_us,
            "toUs": where.to_us,
        },
        "cancelled": cancelled,
        "remaining": remaining,
    }
    entry = operator.entry(where.tenant, "run.bulk_cancel", f"runs:{len(cancelled)}", details)
    await env.db.transact(lambda c: record_audit(c, entry, env.clock.now_us()))
    return BulkCancelled(cancelled, remaining, False)
