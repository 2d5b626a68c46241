"""Side records of API calls: the audit log of admin actions and idempotency keys.

The SQL lives in `store.audit` and `store.idempotency`; the names here are the engine's
interface to them, kept importable for the services and faces that use them.
"""

from __future__ import annotations

from typing import Any

from stellaorch.domain.audit import AuditEntry
from stellaorch.store import Connection
from stellaorch.store.audit import insert_audit_entry, select_audit_page
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
    "list_audit",
    "record_audit",
    "save_response",
]


def record_audit(conn: Connection, entry: AuditEntry, now_us: int) -> None:
    """Append an audit entry inside the caller's transaction (never updated, never deleted)."""
    insert_audit_entry(conn, entry, now_us)


def list_audit(conn: Connection, tenant: str, after_id: int, limit: int) -> list[dict[str, Any]]:
    """A tenant's audit entries in order, after position `after_id`."""
    return select_audit_page(conn, tenant, after_id, limit)
