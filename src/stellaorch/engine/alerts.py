"""The alert service: a tenant's notification rules (set, list, delete) and delivery log.

Changes are audited (`alert.set`, `alert.delete`) in their own transaction. Deciding what
fires and posting the webhooks is `engine.alert_loop`, off every request's and run's path.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellaorch.domain.alerts import AlertRule, check_rule
from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import Conflict, NotFound
from stellaorch.domain.secrets import SecretNotFound
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.store import Connection
from stellaorch.store import alerts as store
from stellaorch.store import secrets as stored_secrets
from stellaorch.store.alerts import AlertRuleRow as AlertRuleRow
from stellaorch.store.alerts import DeliveryRow as DeliveryRow


class AlertRuleNotFound(NotFound):
    """No such alert rule for this tenant."""

    code = "ALERT_RULE_NOT_FOUND"


class AlertRuleLimitReached(Conflict):
    """The tenant already has as many alert rules as the operator allows."""

    code = "ALERT_RULE_LIMIT_REACHED"


@dataclass(frozen=True)
class RuleListing:
    """A rule with its newest delivery (None before anything fired)."""

    rule: AlertRuleRow
    last: DeliveryRow | None


class AlertService:
    """Alert rules of one tenant at a time."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env

    async def put(self, rule: AlertRule, operator: Operator) -> AlertRuleRow:
        """Create or replace a rule; it watches what happens from now on."""
        check_rule(rule)

        def work(conn: Connection) -> AlertRuleRow:
            now = self.env.clock.now_us()
            existing = store.get_rule(conn, rule.tenant, rule.rule_id)
            cap = self.env.settings.max_alert_rules_per_tenant
            if existing is None and store.count_rules(conn, rule.tenant) >= cap:
                raise AlertRuleLimitReached(
                    f"tenant {rule.tenant} already has {cap} alert rules, the most allowed"
                    " (STELLA_ORCH_MAX_ALERT_RULES_PER_TENANT); delete one first"
                )
            _check_secret(conn, rule)
            store.put_rule(conn, _row(rule, now))
            details = {"kind": rule.kind.value, "url": rule.url, "secret": rule.secret_name}
            entry = operator.entry(rule.tenant, "alert.set", f"alert:{rule.rule_id}", details)
            record_audit(conn, entry, now)
            found = store.get_rule(conn, rule.tenant, rule.rule_id)
            assert found is not None
            return found

        return await self.env.db.transact(work)

    async def listing(self, tenant: str) -> list[RuleListing]:
        """The tenant's rules by id, each with its newest delivery."""

        def work(conn: Connection) -> list[RuleListing]:
            last = store.last_deliveries(conn, tenant)
            return [RuleListing(r, last.get(r.rule_id)) for r in store.list_rules(conn, tenant)]

        return await self.env.db.read(work)

    async def get(self, tenant: str, rule_id: str) -> RuleListing:
        """One rule with its newest delivery."""
        for listing in await self.listing(tenant):
            if listing.rule.rule_id == rule_id:
                return listing
        raise AlertRuleNotFound(f"alert rule {rule_id} not found")

    async def delete(self, tenant: str, rule_id: str, operator: Operator) -> None:
        """Remove a rule; its pending deliveries end failed, its delivery log stays."""

        def work(conn: Connection) -> None:
            now = self.env.clock.now_us()
            if not store.delete_rule(conn, tenant, rule_id, now):
                raise AlertRuleNotFound(f"alert rule {rule_id} not found")
            record_audit(conn, operator.entry(tenant, "alert.delete", f"alert:{rule_id}"), now)

        await self.env.db.transact(work)

    async def deliveries(
        self, tenant: str, rule_id: str | None = None, before: int | None = None, limit: int = 50
    ) -> tuple[list[DeliveryRow], int | None]:
        """A page of the tenant's deliveries, newest first, and the id to continue before."""
        found = await self.env.db.read(
            lambda c: store.list_deliveries(c, tenant, rule_id, before, limit + 1)
        )
        page = found[:limit]
        return page, (page[-1].id if len(found) > limit and page else None)


def _check_secret(conn: Connection, rule: AlertRule) -> None:
    """The signing secret must exist now (its value is read at each delivery)."""
    name = rule.secret_name
    if name is not None and not stored_secrets.secret_versions_of(conn, rule.tenant, [name]):
        raise SecretNotFound(
            f"secret {name} does not exist for tenant {rule.tenant}; `secret put` it first"
        )


def _row(rule: AlertRule, now: int) -> AlertRuleRow:
    """The stored form of a new rule (an existing rule keeps its cursor and creation time)."""
    return AlertRuleRow(
        tenant=rule.tenant,
        rule_id=rule.rule_id,
        kind=rule.kind.value,
        url=rule.url,
        dag_id=rule.dag_id,
        threshold=rule.threshold,
        window_seconds=rule.window_seconds,
        secret_name=rule.secret_name,
        cursor_us=now,
        created_us=now,
        updated_us=now,
    )
