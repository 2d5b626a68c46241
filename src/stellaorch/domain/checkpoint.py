"""Ledger checkpoints: a tenant's signed statement of its ledger heads, chained like entries.

A checkpoint names, for every run of the tenant whose chain moved since the tenant's previous
checkpoint, the run's newest `seq` and `entryHash` (and `startedUtc` once known), plus the
tenant's entry count and newest entry hash. Because each entry hash covers every entry before
it in the run, a signed head pins the whole prefix of the chain: a chain rewritten and
re-hashed afterwards no longer has that hash at that seq. See docs/ledger.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stellaorch.domain.canonical import canonical_json, sha256_hex
from stellaorch.domain.ledger import GENESIS_HASH
from stellaorch.domain.providers import format_utc

CHECKPOINT_FORMAT = "stella.ledger.checkpoint/v1"
CHECKPOINT_TYPE = "application/vnd.stella.ledger.checkpoint+json"
FIRST_PREV_HASH = GENESIS_HASH


@dataclass(frozen=True)
class RunHead:
    """Where one run's chain stood at a checkpoint."""

    run_id: str
    seq: int
    entry_hash: str
    started_us: int | None

    def document(self) -> dict[str, Any]:
        """The head as the checkpoint lists it."""
        return {
            "runId": self.run_id,
            "seq": self.seq,
            "entryHash": self.entry_hash,
            "startedUtc": format_utc(self.started_us),
        }


@dataclass(frozen=True)
class CheckpointDraft:
    """What one tenant's next checkpoint says, before it is hashed and signed."""

    tenant: str
    seq: int
    ts_us: int
    prev_hash: str
    entries: int
    last_entry_hash: str
    runs: tuple[RunHead, ...]

    def document(self) -> dict[str, Any]:
        """The signed payload (runs sorted by runId)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "tenant": self.tenant,
            "seq": self.seq,
            "timestamp": format_utc(self.ts_us),
            "prevHash": self.prev_hash,
            "entries": self.entries,
            "lastEntryHash": self.last_entry_hash,
            "runs": [r.document() for r in sorted(self.runs, key=lambda r: r.run_id)],
        }

    def payload(self) -> bytes:
        """The payload bytes: canonical JSON, UTF-8."""
        return canonical_json(self.document()).encode("utf-8")


def checkpoint_hash(payload: bytes) -> str:
    """`sha256:` over the payload bytes; the next checkpoint's `prevHash`."""
    return "sha256:" + sha256_hex(payload)


def label(document: Mapping[str, Any]) -> str:
    """`checkpoint 3 (2026-01-01T00:01:00.000Z)`: how a problem names a checkpoint."""
    return f"checkpoint {document.get('seq')} ({document.get('timestamp')})"


def head_problem(
    document: Mapping[str, Any], head: Mapping[str, Any], hashes: list[str]
) -> str | None:
    """Does a run's exported chain (`hashes`, by seq) still hold the head a checkpoint signed?"""
    run_id, seq, signed = head.get("runId"), head.get("seq"), head.get("entryHash")
    if not isinstance(seq, int) or seq < 1:
        return f"{label(document)}: run {run_id} has no valid seq"
    if seq > len(hashes):
        return (
            f"{label(document)} signed run {run_id} at seq {seq}, but the export holds only "
            f"{len(hashes)} entries: entries were removed after the checkpoint"
        )
    if hashes[seq - 1] != signed:
        return (
            f"{label(document)} signed run {run_id} seq {seq} as {signed}, the export has "
            f"{hashes[seq - 1]}: the chain was rewritten after the checkpoint"
        )
    return None


def link_problem(
    previous: Mapping[str, Any] | None, prev_hash: str, document: Mapping[str, Any]
) -> str | None:
    """Is `document` the successor of `previous` (whose hash is `prev_hash`) in one chain?"""
    seq = document.get("seq")
    if previous is None:
        if seq == 1 and document.get("prevHash") != FIRST_PREV_HASH:
            return f"{label(document)}: the first checkpoint must follow the genesis hash"
        return None
    if seq != previous.get("seq", 0) + 1:
        return f"{label(document)} follows {label(previous)}: a checkpoint is missing"
    if document.get("prevHash") != prev_hash:
        return f"{label(document)}: prevHash is not the hash of {label(previous)}"
    if str(document.get("timestamp")) < str(previous.get("timestamp")):
        return f"{label(document)} is older than {label(previous)}"
    return None
