"""What a stream event is: made from a ledger row, serialised once, matched per subscriber."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.ledger import LedgerEntry
from stellaorch.domain.providers import format_utc
from stellaorch.store.events import LedgerRow

Event = dict[str, Any]

_RUN_EVENT_TYPES = {"run.created": "run.updated"}  # others keep their ledger name


def event_type(entry_type: str) -> str:
    """The stream event type of a ledger entry type (SPEC §3)."""
    if entry_type.startswith("step."):
        return "step.updated"
    return _RUN_EVENT_TYPES.get(entry_type, entry_type)


def event_of(row: LedgerRow) -> Event:
    """The stream event of one ledger row."""
    body = json.loads(row.body)
    event: Event = {
        "seq": row.id,
        "type": event_type(row.entry_type),
        "tenant": row.tenant,
        "dagId": body["dagId"],
        "runId": row.run_id,
        "status": row.status,
        "timestamp": format_utc(row.ts_us),
        "traceId": body["traceId"],
    }
    if row.step_id is not None:
        event["stepId"] = row.step_id
        event["attempt"] = body.get("attempt")
    event["data"] = body.get("data") or {}
    return event


def row_of(entry: LedgerEntry, entry_id: int) -> LedgerRow:
    """The ledger row of an entry the bus carried, once the store told us its global id."""
    return LedgerRow(
        entry_id,
        entry.tenant,
        entry.run_id,
        entry.entry_type,
        entry.step_id,
        entry.status,
        entry.ts_us,
        entry.body,
    )


@dataclass(frozen=True)
class StreamEvent:
    """One event as every subscriber gets it: its fields, and its message serialised once."""

    seq: int  # the event's place in the global order (its ledger id)
    fields: Event
    message: str

    @classmethod
    def of(cls, row: LedgerRow) -> StreamEvent:
        """The event of a ledger row, with its canonical JSON message."""
        fields = event_of(row)
        return cls(row.id, fields, canonical_json(fields))


@dataclass(frozen=True)
class StreamFilter:
    """What one subscriber wants: its tenant's events, optionally narrowed."""

    tenant: str
    dag_id: str | None = None
    status: str | None = None
    run_id: str | None = None

    def matches(self, event: Event) -> bool:
        """True if the event is for this subscriber."""
        return (
            event["tenant"] == self.tenant
            and self.dag_id in (None, event["dagId"])
            and self.status in (None, event["status"])
            and self.run_id in (None, event["runId"])
        )
