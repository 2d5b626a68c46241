"""DAG rollback: make an older version the latest enabled one, in one audited transaction."""

from __future__ import annotations

from dataclasses import dataclass, replace

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import DagNotFound
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.store import Connection, dags
from stellaorch.store.dags import DagVersionRow


@dataclass(frozen=True)
class RolledBack:
    """The version now latest enabled, the one that was before, and the versions disabled."""

    version: DagVersionRow
    previous: str | None
    disabled: list[str]


async def rollback(
    env: EngineEnv, tenant: str, dag_id: str, to: str, operator: Operator
) -> RolledBack:
    """Disable every enabled version published after `to`, and enable `to` (audited)."""

    def work(conn: Connection) -> RolledBack:
        result = _rollback(conn, tenant, dag_id, to)
        details = {"from": result.previous, "to": to, "disabled": result.disabled}
        entry = operator.entry(tenant, "dag.rollback", f"{dag_id}@{to}", details)
        record_audit(conn, entry, env.clock.now_us())
        return result

    return await env.db.transact(work)


def _rollback(conn: Connection, tenant: str, dag_id: str, to: str) -> RolledBack:
    versions = dags.list_versions(conn, tenant, dag_id)  # newest publication first
    target = next((v for v in versions if v.version == to), None)
    if target is None:
        raise DagNotFound(f"DAG {dag_id} version {to} not found")
    previous = next((v.version for v in versions if v.enabled), None)
    newer = [v.version for v in versions if v.seq > target.seq and v.enabled]
    for version in newer:
        dags.set_enabled(conn, tenant, dag_id, version, False)
    dags.set_enabled(conn, tenant, dag_id, to, True)
    return RolledBack(replace(target, enabled=True), previous, newer)
