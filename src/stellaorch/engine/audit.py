"""Reading the audit log: pages by id with an action filter, and a constant-memory export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from stellaorch.domain.providers import format_utc
from stellaorch.engine.env import EngineEnv
from stellaorch.store.audit import select_audit_page

EXPORT_CHUNK = 500


def audit_view(row: dict[str, Any]) -> dict[str, Any]:
    """An audit entry as JSON."""
    return {
        "id": row["id"],
        "tenant": row["tenant"],
        "actor": row["actor"],
        "action": row["action"],
        "target": row["target"],
        "reason": row["reason"],
        "ticket": row["ticket"],
        "createdUtc": format_utc(row["ts_us"]),
        "details": json.loads(row["details_json"]),
    }


class AuditService:
    """The tenant's audit log, read only."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    async def page(
        self, tenant: str, after_id: int, limit: int, action: str | None = None
    ) -> list[dict[str, Any]]:
        """Entries after `after_id`, in order."""
        rows = await self.env.db.read(
            lambda c: select_audit_page(c, tenant, after_id, limit, action)
        )
        return [audit_view(r) for r in rows]

    async def export(self, tenant: str, action: str | None = None) -> AsyncIterator[bytes]:
        """Every entry as NDJSON, fetched a chunk at a time."""
        after = 0
        while True:
            page = await self.page(tenant, after, EXPORT_CHUNK, action)
            if not page:
                return
            yield b"".join(
                json.dumps(v, separators=(",", ":"), sort_keys=True).encode() + b"\n" for v in page
            )
            after = page[-1]["id"]
