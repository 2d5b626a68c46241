"""Queue operations and quotas per tenant: figures, pause/resume/drain, quota limits (audited)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import TenantForbidden, ValidationError
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.quotas import MAX_LIMIT, QuotaGate
from stellaorch.engine.records import record_audit
from stellaorch.engine.workers import WorkerRegistry
from stellaorch.store import Connection, controls
from stellaorch.store.controls import ALL_DAGS as ALL_DAGS
from stellaorch.store.controls import QueueFigures
from stellaorch.store.controls import QuotaRow as QuotaRow
from stellaorch.store.notify import Topic, notify_committed

QUEUE_ACTIONS = {
    "pause": {"paused": True},
    "resume": {"paused": False, "draining": False},
    "drain": {"draining": True},
}


@dataclass(frozen=True)
class QueueView:
    """A tenant's queue figures and when its next queued run may start under its quotas."""

    figures: QueueFigures
    next_eligible_us: int | None
    quota_limited: bool


@dataclass(frozen=True)
class QuotaLimits:
    """Requested limits; fields left None keep their stored value."""

    dag_id: str | None = None
    max_active: int | None = None
    max_per_hour: int | None = None
    burst: int | None = None

    def document(self) -> dict[str, Any]:
        """The limits asked for, by their API names (what the audit entry records)."""
        named = {
            "dagId": self.dag_id,
            "maxActive": self.max_active,
            "maxPerHour": self.max_per_hour,
            "burst": self.burst,
        }
        return {k: v for k, v in named.items() if v is not None}


class QueueService:
    """Reads and steers one tenant's queue; every change is one audited transaction."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self._worker_ttl_us = WorkerRegistry(env).ttl_us

    async def view(self, tenant: str) -> QueueView:
        """The tenant's queue now."""
        return await self.env.db.read(lambda c: self._view(c, tenant))

    def _view(self, conn: Connection, tenant: str) -> QueueView:
        now = self.env.clock.now_us()
        gate = QuotaGate.load(conn, [tenant], now)
        limited = bool(gate.blocked_dags(tenant))
        eligible = gate.next_eligible_us(tenant) if limited else now
        figures = controls.queue_figures(conn, tenant, now, self._worker_ttl_us)
        return QueueView(figures, eligible, limited)

    async def act(
        self, caller_tenant: str, tenant: str, action: str, operator: Operator
    ) -> QueueView:
        """Pause, resume or drain the caller's own queue (audited as `queue.<action>`)."""
        if tenant != caller_tenant:
            raise TenantForbidden("a queue can only be steered by its own tenant")
        flags = QUEUE_ACTIONS[action]
        audit = operator.entry(caller_tenant, f"queue.{action}", f"queue:{tenant}", {})

        def work(conn: Connection) -> QueueView:
            now = self.env.clock.now_us()
            controls.set_queue_flags(conn, tenant, now, **flags)
            record_audit(conn, audit, now)
            if action == "resume":  # its queued steps may be leased again: tell the workers
                notify_committed(conn, Topic.WORK)
            return self._view(conn, tenant)

        return await self.env.db.transact(work)

    async def quotas(self, tenant: str, dag_id: str | None = None) -> list[QuotaRow]:
        """The tenant's quota rows (optionally one DAG's)."""
        rows = await self.env.db.read(lambda c: controls.list_quotas(c, [tenant]))
        return [r for r in rows if dag_id is None or r.dag_id == dag_id]

    async def usage(self, tenant: str) -> QuotaGate:
        """The tenant's quotas with what counts against them now."""
        now = self.env.clock.now_us()
        return await self.env.db.read(lambda c: QuotaGate.load(c, [tenant], now))

    async def set_quota(self, tenant: str, limits: QuotaLimits, operator: Operator) -> QuotaRow:
        """Merge the given limits into the tenant's (or DAG's) quota (audited as `quota.set`)."""
        for name, value in (
            ("maxActive", limits.max_active),
            ("maxPerHour", limits.max_per_hour),
            ("burst", limits.burst),
        ):
            _check_limit(name, value)
        key = limits.dag_id or ALL_DAGS
        audit = operator.entry(tenant, "quota.set", f"quota:{key}", limits.document())

        def work(conn: Connection) -> QuotaRow:
            now = self.env.clock.now_us()
            old = {r.dag_id: r for r in controls.list_quotas(conn, [tenant])}.get(key)
            row = _merged(tenant, key, old, limits, now)
            controls.put_quota(conn, row)
            record_audit(conn, audit, now)
            notify_committed(conn, Topic.WORK)  # a raised limit may let queued runs start
            return row

        return await self.env.db.transact(work)


def _check_limit(name: str, value: int | None) -> None:
    """Limits are whole numbers from 0 to MAX_LIMIT."""
    if value is not None and not 0 <= value <= MAX_LIMIT:
        raise ValidationError(f"{name} must be between 0 and {MAX_LIMIT}, got {value}")


def _merged(tenant: str, dag_id: str, old: QuotaRow | None, new: QuotaLimits, now: int) -> QuotaRow:
    """The stored quota with the given limits replaced."""

    def pick(value: int | None, before: int | None) -> int | None:
        return value if value is not None else before

    return QuotaRow(
        tenant,
        dag_id,
        pick(new.max_active, old.max_active if old else None),
        pick(new.max_per_hour, old.max_per_hour if old else None),
        pick(new.burst, old.burst if old else None),
        now,
    )
