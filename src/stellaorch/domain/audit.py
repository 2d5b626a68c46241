"""Audit entries of admin actions, and the operator (who, why, which ticket) behind one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    """Who did which admin action to what, why, under which ticket."""

    tenant: str
    actor: str
    action: str
    target: str
    reason: str
    ticket: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Operator:
    """Who asks for an admin change, and why (recorded in the audit log)."""

    actor: str
    reason: str
    ticket: str | None = None

    def entry(
        self, tenant: str, action: str, target: str, details: dict[str, Any] | None = None
    ) -> AuditEntry:
        """The audit entry of `action` on `target`, as this operator asked for it."""
        return AuditEntry(tenant, self.actor, action, target, self.reason, self.ticket, details)
