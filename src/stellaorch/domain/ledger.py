"""The run ledger's entry format, its hash chain, and the verification of a chain."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stellaorch.domain.canonical import encode_prepared, normalise, sha256_hex
from stellaorch.domain.providers import format_utc

GENESIS_HASH = "sha256:" + "0" * 64


class EntryType(StrEnum):
    """What a ledger entry records: a run's or a step's change of status."""

    RUN_CREATED = "run.created"
    RUN_STARTED = "run.started"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    STEP_QUEUED = "step.queued"
    STEP_RUNNING = "step.running"
    STEP_RETRYING = "step.retrying"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    STEP_CANCELLED = "step.cancelled"
    STEP_SKIPPED = "step.skipped"
    STEP_REUSED = "step.reused"  # succeeded in the run a resumed replay replays; not executed


# The entries that end a run: exactly one per run, always its last.
RUN_ENDED: frozenset[EntryType] = frozenset(
    {EntryType.RUN_COMPLETED, EntryType.RUN_FAILED, EntryType.RUN_CANCELLED}
)
# A run's first signal: the first entry showing it at work (a step running, retrying or
# finishing) or its end when no step ever ran (cancelled while queued). A step queued,
# skipped or cancelled before it ran is not one.
FIRST_SIGNAL: frozenset[EntryType] = frozenset(
    {EntryType.STEP_RUNNING, EntryType.STEP_RETRYING, EntryType.STEP_SUCCEEDED}
    | {EntryType.STEP_FAILED}
    | RUN_ENDED
)
# The entries after which a run's remaining attempts must stop.
RUN_STOPPED: frozenset[EntryType] = frozenset({EntryType.RUN_FAILED, EntryType.RUN_CANCELLED})


@dataclass(frozen=True)
class LedgerEntry:
    """One state change of a run or step, chained to the previous entry of the same run."""

    run_id: str
    seq: int
    tenant: str
    dag_id: str
    trace_id: str
    entry_type: str
    status: str
    ts_us: int
    prev_hash: str
    entry_hash: str
    body: str
    step_id: str | None = None
    attempt: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The entry as JSON (the body the hash covers, plus the hash)."""
        doc: dict[str, Any] = json.loads(self.body)
        doc["entryHash"] = self.entry_hash
        return doc


@dataclass(frozen=True)
class EntryDraft:
    """What a change says before it is placed in a chain."""

    run_id: str
    tenant: str
    dag_id: str
    trace_id: str
    entry_type: EntryType
    status: str
    ts_us: int
    step_id: str | None = None
    attempt: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def seal(draft: EntryDraft, seq: int, prev_hash: str) -> LedgerEntry:
    """Place a draft at position `seq` after `prev_hash` and compute its hash."""
    entry_type = EntryType(draft.entry_type).value  # refuses an entry type nobody defined
    body_doc = {
        "runId": draft.run_id,
        "seq": seq,
        "tenant": draft.tenant,
        "dagId": draft.dag_id,
        "traceId": draft.trace_id,
        "type": entry_type,
        "status": draft.status,
        "stepId": draft.step_id,
        "attempt": draft.attempt,
        "timestamp": format_utc(draft.ts_us),
        "data": normalise(draft.data),
        "prevHash": prev_hash,
    }
    # Every other field is a str, int or None: only `data` needs number normalisation.
    body = encode_prepared(body_doc)
    return LedgerEntry(
        run_id=draft.run_id,
        seq=seq,
        tenant=draft.tenant,
        dag_id=draft.dag_id,
        trace_id=draft.trace_id,
        entry_type=entry_type,
        status=draft.status,
        ts_us=draft.ts_us,
        prev_hash=prev_hash,
        entry_hash="sha256:" + sha256_hex(body),
        body=body,
        step_id=draft.step_id,
        attempt=draft.attempt,
        data=draft.data,
    )


@dataclass(frozen=True)
class StoredEntry:
    """An entry as read back from the store: position, body text and recorded hash."""

    run_id: str
    seq: int
    body: str
    entry_hash: str


@dataclass(frozen=True)
class ChainReport:
    """Outcome of verifying one run; `broken_seq` is the first bad entry of a broken chain.

    `check` names what failed: "chain" (the entries themselves), "state" (the run's rows
    disagree with its entries) or "content" (stored outputs or logs disagree with their hash).
    """

    run_id: str
    ok: bool
    count: int
    head: str
    broken_seq: int | None = None
    reason: str | None = None
    check: str | None = None


def _check_entry(entry: StoredEntry, expected_seq: int, prev: str) -> str | None:
    """Why `entry` does not belong at `expected_seq` after `prev`, or None if it does."""
    if entry.seq != expected_seq:
        return f"expected seq {expected_seq}, found {entry.seq} (entry missing)"
    if "sha256:" + sha256_hex(entry.body) != entry.entry_hash:
        return "entryHash does not match the entry's content"
    try:
        doc = json.loads(entry.body)
    except ValueError:
        return "entry body is not JSON"
    if doc.get("prevHash") != prev:
        return "prevHash does not match the previous entry"
    if doc.get("runId") != entry.run_id or doc.get("seq") != entry.seq:
        return "entry names another run or position"
    return None


def verify_chain(
    run_id: str, entries: Iterable[StoredEntry], expected_head: str | None = None
) -> ChainReport:
    """Check seq continuity, every hash and every link; report the first broken entry."""
    prev, count = GENESIS_HASH, 0
    for entry in entries:
        count += 1
        reason = _check_entry(entry, count, prev)
        if reason is not None:
            return ChainReport(run_id, False, count - 1, prev, count, reason, "chain")
        prev = entry.entry_hash
    if expected_head is not None and expected_head != prev:
        reason = "chain ends before the run's recorded head (entries removed at the end)"
        return ChainReport(run_id, False, count, prev, count + 1, reason, "chain")
    return ChainReport(run_id, True, count, prev)
