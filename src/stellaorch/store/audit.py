"""Named queries of the audit log: append an entry, read a tenant's entries in id order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from stellaorch.domain.audit import AuditEntry
from stellaorch.domain.canonical import canonical_json
from stellaorch.store.schema import audit_log


def insert_audit_entry(conn: Connection, entry: AuditEntry, now_us: int) -> None:
    """Append an audit entry inside the caller's transaction (never updated, never deleted)."""
    conn.execute(
        audit_log.insert().values(
            tenant=entry.tenant,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            reason=entry.reason,
            ticket=entry.ticket,
            ts_us=now_us,
            details_json=canonical_json(entry.details or {}),
        )
    )


def select_audit_page(
    conn: Connection, tenant: str, after_id: int, limit: int, action: str | None = None
) -> list[dict[str, Any]]:
    """A tenant's entries in id order after `after_id`, optionally one action's (ix_audit)."""
    a = audit_log.c
    query = select(audit_log).where(a.tenant == tenant, a.id > after_id)
    if action is not None:
        query = query.where(a.action == action)
    return [dict(r._mapping) for r in conn.execute(query.order_by(a.id).limit(limit))]


def select_audit_window(
    conn: Connection, tenant: str, window: tuple[int, int], after_id: int, limit: int
) -> list[dict[str, Any]]:
    """select_audit_window: a tenant's entries made in [from, to), in id order (ix_audit)."""
    a = audit_log.c
    query = select(audit_log).where(
        a.tenant == tenant, a.id > after_id, a.ts_us >= window[0], a.ts_us < window[1]
    )
    return [dict(r._mapping) for r in conn.execute(query.order_by(a.id).limit(limit))]
