"""Ledger export: a tenant's started runs in a window as NDJSON, closed by a verifiable manifest.

The format, the manifest's definition and what verification checks are documented in
docs/ledger-export.md. Runs are read in keyset-paged chunks, one short transaction each, so an
export of any size holds at most one chunk in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stellaorch.domain.canonical import canonical_json, sha256_hex
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.ledger import StoredEntry, verify_chain
from stellaorch.domain.projection import state_problem
from stellaorch.engine.views import run_view
from stellaorch.store import Connection
from stellaorch.store.database import Database
from stellaorch.store.export import (
    Cursor,
    EntryRow,
    read_attempts_of,
    read_entries_of,
    read_started_runs,
    read_steps_of,
)
from stellaorch.store.runs import RunState

CHUNK_RUNS = 200  # runs per read: one short transaction, bounded memory
_WRITE_BUFFER = 1 << 20  # bytes gathered before one file write


@dataclass(frozen=True)
class ExportWindow:
    """Which runs an export holds: the tenant's runs started in [from_us, to_us)."""

    tenant: str
    from_us: int
    to_us: int

    def __post_init__(self) -> None:
        if self.from_us >= self.to_us:
            raise ValidationError("the export window is empty: from must be before to")


# -- run lines ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunChunk:
    """Up to one chunk of runs with their steps, attempts and ledger entries, read together."""

    runs: list[RunState]
    steps: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    entries: list[EntryRow]

    @property
    def cursor(self) -> Cursor | None:
        """Where the next chunk starts."""
        last = self.runs[-1] if self.runs else None
        if last is None or last.started_us is None:
            return None
        return (last.started_us // 1000, last.run_id)

    def lines(self) -> list[bytes]:
        """One NDJSON line per run, in chunk order."""
        steps, tries, events = defaultdict(list), defaultdict(list), defaultdict(list)
        for row in self.steps:
            steps[row["run_id"]].append(row)
        for row in self.attempts:
            tries[row["run_id"]].append(row)
        for run_id, body, entry_hash in self.entries:
            events[run_id].append(_entry_document(body, entry_hash))
        return [
            run_line(run, steps[run.run_id], tries[run.run_id], events[run.run_id])
            for run in self.runs
        ]


def read_chunk(
    conn: Connection, window: ExportWindow, after: Cursor | None, limit: int
) -> RunChunk:
    """One chunk of the export, consistent within its transaction."""
    page = read_started_runs(conn, window.tenant, (window.from_us, window.to_us), after, limit)
    ids = [r.run_id for r in page]
    if not ids:
        return RunChunk([], [], [], [])
    return RunChunk(
        page,
        read_steps_of(conn, window.tenant, ids),
        read_attempts_of(conn, window.tenant, ids),
        read_entries_of(conn, window.tenant, ids),
    )


def _entry_document(body: str, entry_hash: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    doc["entryHash"] = entry_hash
    return doc


def run_line(
    run: RunState,
    steps: list[dict[str, Any]],
    attempt_rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
) -> bytes:
    """The run view plus its chain head and ledger entries, as one canonical JSON line."""
    doc = run_view(run, steps, attempt_rows, whole=True)  # an audit copy keeps every output
    doc["ledgerHead"] = run.ledger_head
    doc["events"] = events
    return canonical_json(doc).encode("utf-8") + b"\n"


async def run_lines(
    db: Database, window: ExportWindow, *, chunk: int = CHUNK_RUNS
) -> AsyncIterator[bytes]:
    """The window's run lines, a fresh short transaction per chunk."""
    after: Cursor | None = None
    while True:
        part = await db.read(partial(read_chunk, window=window, after=after, limit=chunk))
        for line in part.lines():
            yield line
        if len(part.runs) < chunk:
            return
        after = part.cursor


# -- manifest -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """What the trailing line promises about the run lines before it."""

    count: int
    sha256: str
    root_hash: str

    def document(self) -> dict[str, Any]:
        """The manifest as JSON (`?manifest=1`)."""
        return {"count": self.count, "sha256": self.sha256, "rootHash": self.root_hash}

    def line(self) -> bytes:
        """The trailing NDJSON line."""
        return canonical_json({"manifest": self.document()}).encode("utf-8") + b"\n"


class ManifestBuilder:
    """Hashes run lines as they pass, in constant memory."""

    def __init__(self) -> None:
        self.count = 0
        self._all = hashlib.sha256()
        self._root = hashlib.sha256()

    def add(self, line: bytes) -> None:
        """Account for one run line (with its trailing newline)."""
        self._all.update(line)
        # rootHash covers the per-line digests joined by "\n" (see docs/ledger-export.md).
        separator = b"\n" if self.count else b""
        self._root.update(separator + sha256_hex(line.removesuffix(b"\n")).encode("ascii"))
        self.count += 1

    def manifest(self) -> Manifest:
        """The manifest of the lines added so far."""
        return Manifest(self.count, self._all.hexdigest(), "sha256:" + self._root.hexdigest())


async def export_lines(
    db: Database, window: ExportWindow, *, chunk: int = CHUNK_RUNS
) -> AsyncIterator[bytes]:
    """The whole export: run lines, then the manifest line."""
    builder = ManifestBuilder()
    async for line in run_lines(db, window, chunk=chunk):
        builder.add(line)
        yield line
    yield builder.manifest().line()


async def export_manifest(
    db: Database, window: ExportWindow, *, chunk: int = CHUNK_RUNS
) -> Manifest:
    """Only the manifest, computed over the same lines without keeping them."""
    builder = ManifestBuilder()
    async for line in run_lines(db, window, chunk=chunk):
        builder.add(line)
    return builder.manifest()


class LedgerExport:
    """The ledger export of the engine's store, as the API serves it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def lines(self, window: ExportWindow) -> AsyncIterator[bytes]:
        """The whole export: run lines, then the manifest line."""
        return export_lines(self._db, window)

    async def manifest(self, window: ExportWindow) -> Manifest:
        """Only the manifest of the export."""
        return await export_manifest(self._db, window)


async def write_export(
    db: Database, window: ExportWindow, path: Path, *, chunk: int = CHUNK_RUNS
) -> Manifest:
    """Write the export to `path` (via a .partial file, so no half export looks complete)."""
    partial = path.with_name(path.name + ".partial")
    builder = ManifestBuilder()
    with partial.open("wb") as out:
        buffer = bytearray()
        async for line in run_lines(db, window, chunk=chunk):
            builder.add(line)
            buffer += line
            if len(buffer) >= _WRITE_BUFFER:
                await asyncio.to_thread(out.write, bytes(buffer))
                buffer.clear()
        buffer += builder.manifest().line()
        await asyncio.to_thread(out.write, bytes(buffer))
    partial.replace(path)
    return builder.manifest()


# -- verification -------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportReport:
    """Outcome of verifying an export; `line` is where the first problem was found."""

    ok: bool
    count: int
    problem: str | None = None
    line: int | None = None


def verify_file(path: Path) -> ExportReport:
    """Verify an export file (see `verify_export`)."""
    with path.open("rb") as lines:
        return verify_export(lines)


def verify_export(lines: Iterable[bytes]) -> ExportReport:
    """Recompute the manifest and re-verify every run's hash chain from its inline events."""
    check = _ExportCheck()
    number = 0
    for number, raw in enumerate(lines, start=1):
        problem = check.feed(raw)
        if problem is not None:
            return ExportReport(False, check.builder.count, problem, number)
    problem = check.finish()
    if problem is not None:
        return ExportReport(False, check.builder.count, problem, number or None)
    return ExportReport(True, check.builder.count)


class _ExportCheck:
    """Line-by-line state of one verification."""

    def __init__(self) -> None:
        self.builder = ManifestBuilder()
        self.manifest: Any = None
        self.last_key: tuple[str, str] | None = None
        self.tenant: str | None = None

    def feed(self, raw: bytes) -> str | None:
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
        self.builder.add(text + b"\n")
        return self._run_problem(doc)

    def _run_problem(self, doc: dict[str, Any]) -> str | None:
        run_id = doc.get("runId")
        if not isinstance(run_id, str):
            return "run line without a runId"
        problem = self._place_problem(doc, run_id) or _chain_problem(doc, run_id)
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

    def finish(self) -> str | None:
        """Compare the recomputed manifest with the one the export carries."""
        if not isinstance(self.manifest, dict):
            return "no manifest line: the export is incomplete"
        expected = self.builder.manifest().document()
        for name, value in expected.items():
            if self.manifest.get(name) != value:
                return f"manifest {name} is {self.manifest.get(name)!r}, recomputed {value!r}"
        return None


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
