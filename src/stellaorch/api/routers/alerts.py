"""Alert rules of the caller's tenant (admin): set, list, read, delete, and the delivery log."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from stellaorch.api.auth import AdminCaller, AdminReader
from stellaorch.api.paging import PageSize, PageToken, decode_position, encode_token
from stellaorch.api.state import orchestrator
from stellaorch.domain.alerts import (
    DEFAULT_WINDOW_SECONDS,
    MAX_THRESHOLD,
    MAX_URL_CHARS,
    MAX_WINDOW_SECONDS,
    MIN_WINDOW_SECONDS,
    AlertKind,
    AlertRule,
    secret_name_of,
)
from stellaorch.domain.providers import format_utc
from stellaorch.engine.alerts import DeliveryRow, RuleListing

router = APIRouter(tags=["alerts"])
RULE_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"
DAG_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class PutAlert(BaseModel):
    """Body of PUT /alerts/{ruleId}."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["run.failed", "deadletter.growth", "backlog"]
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description="http(s) webhook")
    dagId: str | None = Field(default=None, pattern=DAG_ID, description="run.failed only")
    threshold: int | None = Field(default=None, ge=0, le=MAX_THRESHOLD)
    windowSeconds: int = Field(
        default=DEFAULT_WINDOW_SECONDS, ge=MIN_WINDOW_SECONDS, le=MAX_WINDOW_SECONDS
    )
    secretRef: str | None = Field(
        default=None, max_length=140, description="NAME or ${secrets.NAME}: the HMAC key"
    )

    def rule(self, tenant: str, rule_id: str) -> AlertRule:
        """The engine's view of the request."""
        return AlertRule(
            tenant=tenant,
            rule_id=rule_id,
            kind=AlertKind(self.kind),
            url=self.url,
            dag_id=self.dagId,
            threshold=self.threshold,
            window_seconds=self.windowSeconds,
            secret_name=secret_name_of(self.secretRef),
        )


def delivery_view(row: DeliveryRow) -> dict[str, Any]:
    """One delivery as JSON (the body as it was sent)."""
    return {
        "deliveryId": row.id,
        "ruleId": row.rule_id,
        "kind": row.kind,
        "eventKey": row.event_key,
        "status": row.status,
        "attempts": row.attempts,
        "responseStatus": row.response_status,
        "lastError": row.last_error,
        "nextAttemptUtc": format_utc(row.next_attempt_us) if row.status == "pending" else None,
        "createdUtc": format_utc(row.created_us),
        "updatedUtc": format_utc(row.updated_us),
        "payload": json.loads(row.payload_json),
    }


def rule_view(listing: RuleListing) -> dict[str, Any]:
    """A rule with its newest delivery."""
    rule, last = listing.rule, listing.last
    return {
        "ruleId": rule.rule_id,
        "tenant": rule.tenant,
        "kind": rule.kind,
        "url": rule.url,
        "dagId": rule.dag_id,
        "threshold": rule.threshold,
        "windowSeconds": rule.window_seconds,
        "secretRef": rule.secret_name,
        "signed": rule.secret_name is not None,
        "createdUtc": format_utc(rule.created_us),
        "updatedUtc": format_utc(rule.updated_us),
        "lastDelivery": delivery_view(last) if last is not None else None,
    }


@router.get("/alerts")
async def list_alerts(request: Request, caller: AdminReader) -> dict[str, Any]:
    """The tenant's alert rules by id, each with its newest delivery."""
    listings = await orchestrator(request).alerts.listing(caller.tenant)
    return {"items": [rule_view(r) for r in listings], "nextPageToken": None}


@router.get("/alert-deliveries")
async def list_deliveries(
    request: Request,
    caller: AdminReader,
    page_size: PageSize = 50,
    page_token: PageToken = None,
    ruleId: Annotated[str | None, Query(pattern=RULE_ID)] = None,
) -> dict[str, Any]:
    """The tenant's alert delivery log, newest first (of one rule with `ruleId`)."""
    position = decode_position(page_token, (int,))
    rows, cursor = await orchestrator(request).alerts.deliveries(
        caller.tenant, ruleId, int(position[0]) if position else None, page_size
    )
    token = encode_token([cursor]) if cursor is not None else None
    return {"items": [delivery_view(r) for r in rows], "nextPageToken": token}


@router.get("/alerts/{ruleId}")
async def get_alert(ruleId: str, request: Request, caller: AdminReader) -> dict[str, Any]:
    """One alert rule with its newest delivery."""
    return rule_view(await orchestrator(request).alerts.get(caller.tenant, ruleId))


@router.put("/alerts/{ruleId}")
async def put_alert(
    ruleId: str, body: PutAlert, request: Request, caller: AdminCaller
) -> dict[str, Any]:
    """Create or replace an alert rule (admin + reason); it watches from now on."""
    alerts = orchestrator(request).alerts
    await alerts.put(body.rule(caller.tenant, ruleId), caller.operator)
    return rule_view(await alerts.get(caller.tenant, ruleId))


@router.delete("/alerts/{ruleId}", status_code=204)
async def delete_alert(ruleId: str, request: Request, caller: AdminCaller) -> Response:
    """Delete an alert rule (admin + reason); its delivery log stays."""
    await orchestrator(request).alerts.delete(caller.tenant, ruleId, caller.operator)
    return Response(status_code=204)
