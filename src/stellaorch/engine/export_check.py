"""Verifying a ledger export offline: lines, order, chains, projection, checkpoints, manifest.

What each check means is documented in docs/ledger-export.md and docs/ledger.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.ledger import StoredEntry, verify_chain
from stellaorch.domain.projection import state_problem
from stellaorch.engine.checkpoint_check import CheckpointCheck
from stellaorch.engine.export_manifest import ManifestBuilder

Trusted = Mapping[str, Ed25519PublicKey]


@dataclass(frozen=True)
class ExportReport:
    """Outcome of verifying an export; `line` is where the first problem was found."""

    ok: bool
    count: int
    problem: str | None = None
    line: int | None = None
    checkpoints: int = 0


def verify_file(path: Path, trusted: Trusted | None = None) -> ExportReport:
    """Verify an export file (see `verify_export`)."""
    with path.open("rb") as lines:
        return verify_export(lines, trusted)


def verify_export(lines: Iterable[bytes], trusted: Trusted | None = None) -> ExportReport:
    """Recompute the manifest, re-verify every run's hash chain, check every checkpoint.

    `trusted` are the keys a checkpoint's signature may be by (the server's public key); an
    export that carries checkpoints does not verify without them.
    """
    check = _ExportCheck(trusted)
    number = 0
    for number, raw in enumerate(lines, start=1):
        problem = check.feed(raw, number)
        if problem is not None:
            return check.report(problem, number)
    found = check.finish()
    if found is not None:
        line, problem = found
        return check.report(problem, line or number or None)
    return check.report(None, None)


class _ExportCheck:
    """Line-by-line state of one verification."""

    def __init__(self, trusted: Trusted | None) -> None:
        self.builder = ManifestBuilder()
        self.manifest: Any = None
        self.last_key: tuple[str, str] | None = None
        self.tenant: str | None = None
        self.checkpoints = CheckpointCheck(trusted)

    def report(self, problem: str | None, line: int | None) -> ExportReport:
        """The outcome so far: ok when there is no problem."""
        counts = (self.builder.count, self.checkpoints.count)
        return ExportReport(problem is None, counts[0], problem, line, counts[1])

    def feed(self, raw: bytes, number: int) -> str | None:
        """Check one line; the first problem found, or None."""
        if self.manifest is not None:
            return "content after the manifest line"
        text = raw.removesuffix(b"\n")
        try:
            doc = json.loads(text)
        except ValueError:
            return "line is not JSON"
        if not isinstance(doc, dict):
            return "line is not a JSON object"
        if set(doc) == {"manifest"}:
            self.manifest = doc["manifest"]
            return None
        if set(doc) == {"checkpoint"}:
            self.builder.add_checkpoint(text + b"\n")
            return self._checkpoint_problem(doc["checkpoint"], number)
        if self.checkpoints.count:
            return "a run line after the checkpoint lines"
        self.builder.add(text + b"\n")
        return self._run_problem(doc)

    def _checkpoint_problem(self, envelope: object, number: int) -> str | None:
        problem = self.checkpoints.feed(envelope, number)
        if problem is None and self.tenant not in (None, self.checkpoints.tenant):
            return f"checkpoint of tenant {self.checkpoints.tenant} in an export of {self.tenant}"
        return problem

    def _run_problem(self, doc: dict[str, Any]) -> str | None:
        run_id = doc.get("runId")
        if not isinstance(run_id, str):
            return "run line without a runId"
        problem = self._place_problem(doc, run_id) or _chain_problem(doc, run_id)
        if problem is None:
            self.checkpoints.add_run(run_id, doc["events"])
        return problem or state_problem(doc, doc["events"])

    def _place_problem(self, doc: dict[str, Any], run_id: str) -> str | None:
        """Lines must be one tenant's, ordered by startedUtc then runId."""
        tenant, started = doc.get("tenant"), doc.get("startedUtc")
        if not isinstance(tenant, str) or not isinstance(started, str):
            return f"run {run_id}: tenant or startedUtc missing"
        if self.tenant not in (None, tenant):
            return f"run {run_id}: tenant {tenant} in an export of tenant {self.tenant}"
        key = (started, run_id)
        if self.last_key is not None and key <= self.last_key:
            return f"run {run_id}: out of order (lines go by startedUtc, then runId)"
        self.tenant, self.last_key = tenant, key
        return None

    def finish(self) -> tuple[int | None, str] | None:
        """Compare the recomputed manifest with the one the export carries; check the window."""
        if not isinstance(self.manifest, dict):
            return None, "no manifest line: the export is incomplete"
        # The window is what the export claims to hold; checkpoints are checked against it.
        claimed = (self.manifest.get("from"), self.manifest.get("to"))
        self.builder.window = (str(claimed[0]), str(claimed[1]))
        expected = self.builder.manifest().document()
        for name, value in expected.items():
            if self.manifest.get(name) != value:
                return None, f"manifest {name} is {self.manifest.get(name)!r}, recomputed {value!r}"
        return self.checkpoints.window_problem(self.builder.window)


def _stored_entries(run_id: str, events: list[Any]) -> list[StoredEntry] | str:
    """Rebuild the stored entries from inline events, or say why they are malformed."""
    entries: list[StoredEntry] = []
    for event in events:
        if not isinstance(event, dict):
            return f"run {run_id}: an event is not a JSON object"
        body = {k: v for k, v in event.items() if k != "entryHash"}
        seq, entry_hash = event.get("seq"), event.get("entryHash")
        if not isinstance(seq, int) or not isinstance(entry_hash, str):
            return f"run {run_id}: an event lacks seq or entryHash"
        try:
            entries.append(StoredEntry(run_id, seq, canonical_json(body), entry_hash))
        except ValueError:
            return f"run {run_id}: event {seq} holds a number JSON cannot represent"
    return entries


def _chain_problem(doc: dict[str, Any], run_id: str) -> str | None:
    events = doc.get("events")
    if not isinstance(events, list):
        return f"run {run_id}: no events list"
    entries = _stored_entries(run_id, events)
    if isinstance(entries, str):
        return entries
    report = verify_chain(run_id, entries, doc.get("ledgerHead"))
    if not report.ok:
        return f"run {run_id}: ledger chain broken at seq {report.broken_seq}: {report.reason}"
    foreign = [e for e in events if e.get("tenant") != doc["tenant"]]
    return f"run {run_id}: an event belongs to another tenant" if foreign else None
