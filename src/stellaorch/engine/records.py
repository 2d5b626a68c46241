"""Side records of API calls: the audit log of admin actions and idempotency keys.

The SQL lives in `store.audit` and `store.idempotency`; the names here are the engine's
interface to them, kept importable for the services and faces that use them.
"""

from __future__ import annotations

import logging
from functools import partial

from stellaorch.domain.audit import AuditEntry
from stellaorch.store import Connection
from stellaorch.store.audit import insert_audit_entry
from stellaorch.store.database import after_commit
from stellaorch.store.idempotency import (
    PENDING,
    IdempotencyClaim,
    StoredResponse,
    claim_key,
    find_response,
    finish_key,
    save_response,
)

audit_log = logging.getLogger("stellaorch.audit")

__all__ = [
    "PENDING",
    "AuditEntry",
    "IdempotencyClaim",
    "StoredResponse",
    "claim_key",
    "find_response",
    "finish_key",
    "record_audit",
    "save_response",
]


def record_audit(conn: Connection, entry: AuditEntry, now_us: int) -> None:
    """Append an audit entry inside the caller's transaction (never updated, never deleted)."""
    insert_audit_entry(conn, entry, now_us)
    after_commit(conn, partial(_log_audit, entry))


def _log_audit(entry: AuditEntry) -> None:
    """One info line per committed admin action: who did what to which target, and why."""
    fields = {
        "tenant": entry.tenant,
        "action": entry.action,
        "actor": entry.actor,
        "target": entry.target,
        "reason": entry.reason,
        "ticket": entry.ticket,
    }
    audit_log.info("admin.action", extra=fields)
