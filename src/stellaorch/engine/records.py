"""Side records of API calls: the audit log of admin actions and idempotency keys.

The SQL lives in `store.audit` and `store.idempotency`; the names here are the engine's
interface to them, kept importable for the services and faces that use them.
"""

from __future__ import annotations

from stellaorch.domain.audit import AuditEntry
from stellaorch.store import Connection
from stellaorch.store.audit import insert_audit_entry
from stellaorch.store.idempotency import (
    PENDING,
    IdempotencyClaim,
    StoredResponse,
    claim_key,
    find_response,
    finish_key,
    save_response,
)

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
