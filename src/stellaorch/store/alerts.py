"""Queries over alert rules and their deliveries, and the figures the rules watch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from stellaorch.store.dialect import claim_lock, insert_ignore
from stellaorch.store.schema import alert_deliveries, alert_rules, runs, step_executions

_a = alert_rules.c
_d = alert_deliveries.c
PENDING = "pending"


@dataclass(frozen=True)
class AlertRuleRow:
    """A stored alert rule."""

    tenant: str
    rule_id: str
    kind: str
    url: str
    dag_id: str | None
    threshold: int | None
    window_seconds: int
    secret_name: str | None
    cursor_us: int
    created_us: int
    updated_us: int


@dataclass(frozen=True)
class DeliveryRow:
    """One webhook delivery of one rule: its body, where it stands, its last answer."""

    id: int
    tenant: str
    rule_id: str
    event_key: str
    kind: str
    url: str
    secret_name: str | None
    payload_json: str
    status: str
    attempts: int
    next_attempt_us: int
    response_status: int | None
    last_error: str | None
    created_us: int
    updated_us: int


_RULE_FIELDS = [f.name for f in fields(AlertRuleRow)]
_DELIVERY_FIELDS = [f.name for f in fields(DeliveryRow)]


def _rule(row: Any) -> AlertRuleRow:
    return AlertRuleRow(**{k: row._mapping[k] for k in _RULE_FIELDS})


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(**{k: row._mapping[k] for k in _DELIVERY_FIELDS})


def put_rule(conn: Connection, row: AlertRuleRow) -> None:
    """upsert_alert_rule: create the rule or replace its fields.

    A replaced rule keeps its creation time, and its cursor while it watches the same thing
    (kind and DAG): changing what it watches starts from the new row's cursor (now).
    """
    values = {k: getattr(row, k) for k in _RULE_FIELDS}
    where = (_a.tenant == row.tenant, _a.rule_id == row.rule_id)
    found = conn.execute(select(_a.cursor_us, _a.created_us, _a.kind, _a.dag_id).where(*where))
    old = found.first()
    if old is None:
        conn.execute(insert(alert_rules).values(**values))
        return
    same_watch = (old[2], old[3]) == (row.kind, row.dag_id)
    kept = {"created_us": old[1], "cursor_us": old[0] if same_watch else row.cursor_us}
    conn.execute(update(alert_rules).where(*where).values(**{**values, **kept}))


def get_rule(conn: Connection, tenant: str, rule_id: str) -> AlertRuleRow | None:
    """select_alert_rule: one rule of the tenant."""
    row = conn.execute(
        select(alert_rules).where(_a.tenant == tenant, _a.rule_id == rule_id)
    ).first()
    return _rule(row) if row is not None else None


def list_rules(conn: Connection, tenant: str) -> list[AlertRuleRow]:
    """select_alert_rules: the tenant's rules by id."""
    query = select(alert_rules).where(_a.tenant == tenant).order_by(_a.rule_id)
    return [_rule(r) for r in conn.execute(query)]


def count_rules(conn: Connection, tenant: str) -> int:
    """count_alert_rules: how many rules the tenant has."""
    return int(conn.execute(select(func.count()).where(_a.tenant == tenant)).scalar() or 0)


def all_rules_for_evaluation(conn: Connection, limit: int) -> list[AlertRuleRow]:
    """Maintenance (every tenant): the rules the alert loop evaluates, by tenant and id."""
    query = select(alert_rules).order_by(_a.tenant, _a.rule_id).limit(limit)
    return [_rule(r) for r in conn.execute(query)]


def delete_rule(conn: Connection, tenant: str, rule_id: str, now_us: int) -> int:
    """delete_alert_rule: remove the rule; its pending deliveries end failed (history stays)."""
    conn.execute(
        update(alert_deliveries)
        .where(_d.tenant == tenant, _d.rule_id == rule_id, _d.status == PENDING)
        .values(status="failed", last_error="rule deleted", updated_us=now_us)
    )
    return int(
        conn.execute(delete(alert_rules).where(_a.tenant == tenant, _a.rule_id == rule_id)).rowcount
    )


def move_cursor(conn: Connection, tenant: str, rule_id: str, cursor_us: int) -> None:
    """update_alert_cursor: runs that ended at or before `cursor_us` were looked at."""
    conn.execute(
        update(alert_rules)
        .where(_a.tenant == tenant, _a.rule_id == rule_id, _a.cursor_us < cursor_us)
        .values(cursor_us=cursor_us)
    )


def add_deliveries(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    """insert_alert_deliveries: new pending deliveries; an event already recorded is skipped."""
    batch = list(rows)
    if not batch:
        return 0
    keys = ["tenant", "rule_id", "event_key"]
    return int(conn.execute(insert_ignore(conn, alert_deliveries, keys), batch).rowcount or 0)


def claim_due_deliveries(
    conn: Connection, now_us: int, limit: int, hold_until_us: int
) -> list[DeliveryRow]:
    """Maintenance (every tenant): take the due pending deliveries, oldest first.

    Their next attempt moves to `hold_until_us` in the same transaction, so a second
    delivering process (a lease that lapsed mid-pass) does not post them again meanwhile.
    """
    query = (
        select(alert_deliveries)
        .where(_d.status == PENDING, _d.next_attempt_us <= now_us)
        .order_by(_d.next_attempt_us, _d.id)
        .limit(limit)
    )
    rows = [_delivery(r) for r in conn.execute(claim_lock(conn, query))]
    if rows:
        conn.execute(
            update(alert_deliveries)
            .where(_d.id.in_([r.id for r in rows]))
            .values(next_attempt_us=hold_until_us)
        )
    return rows


def settle_delivery(conn: Connection, delivery_id: int, **values: Any) -> None:
    """update_alert_delivery: record one attempt (status, attempts, answer, next attempt)."""
    conn.execute(
        update(alert_deliveries).where(_d.id == delivery_id, _d.status == PENDING).values(**values)
    )


def list_deliveries(
    conn: Connection, tenant: str, rule_id: str | None, before_id: int | None, limit: int
) -> list[DeliveryRow]:
    """select_alert_deliveries: the tenant's deliveries (of one rule), newest first."""
    query = select(alert_deliveries).where(_d.tenant == tenant)
    if rule_id is not None:
        query = query.where(_d.rule_id == rule_id)
    if before_id is not None:
        query = query.where(_d.id < before_id)
    query = query.order_by(_d.id.desc()).limit(limit)
    return [_delivery(r) for r in conn.execute(query)]


def last_deliveries(conn: Connection, tenant: str) -> dict[str, DeliveryRow]:
    """The newest delivery of each of the tenant's rules."""
    newest = (
        select(func.max(_d.id)).where(_d.tenant == tenant).group_by(_d.rule_id).scalar_subquery()
    )
    query = select(alert_deliveries).where(_d.tenant == tenant, _d.id.in_(newest))
    return {row.rule_id: row for row in map(_delivery, conn.execute(query))}


# -- what the rules watch -------------------------------------------------------------------
@dataclass(frozen=True)
class FailedRun:
    """A run that ended failed."""

    run_id: str
    dag_id: str
    dag_version: str
    ended_us: int
    trace_id: str
    error_json: str | None


def failed_runs_after(
    conn: Connection, tenant: str, dag_id: str | None, after_us: int, limit: int
) -> list[FailedRun]:
    """select_failed_runs_after: the tenant's runs that failed after `after_us`, oldest first."""
    r = runs.c
    query = select(r.run_id, r.dag_id, r.dag_version, r.ended_us, r.trace_id, r.error_json).where(
        r.tenant == tenant, r.status == "failed", r.ended_us > after_us
    )
    if dag_id is not None:
        query = query.where(r.dag_id == dag_id)
    query = query.order_by(r.ended_us, r.run_id).limit(limit)
    return [FailedRun(*row) for row in conn.execute(query)]


def failed_steps_since(conn: Connection, tenant: str, since_us: int) -> int:
    """count_deadletter_since: failed steps of the tenant's runs that failed since `since_us`."""
    r, s = runs.c, step_executions.c
    query = (
        select(func.count())
        .select_from(step_executions.join(runs, r.run_id == s.run_id))
        .where(r.tenant == tenant, r.status == "failed", r.ended_us >= since_us)
        .where(s.status == "failed")
    )
    return int(conn.execute(query).scalar() or 0)
