"""Ledger export: a tenant's started runs in a window as NDJSON, closed by a verifiable manifest.

The format, the manifest's definition and what verification checks are documented in
docs/ledger-export.md. Runs are read in keyset-paged chunks, one short transaction each, so an
export of any size holds at most one chunk in memory.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.providers import format_utc
from stellaorch.engine.export_check import ExportReport, verify_export, verify_file
from stellaorch.engine.export_manifest import Manifest, ManifestBuilder
from stellaorch.engine.views import mark_metrics, run_view
from stellaorch.store import Connection
from stellaorch.store.checkpoints import read_checkpoints
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
from stellaorch.store.step_metrics import metrics_refs_of

__all__ = ["ExportReport", "ExportWindow", "Manifest", "verify_export", "verify_file"]

CHUNK_RUNS = 200  # runs per read: one short transaction, bounded memory
CHUNK_CHECKPOINTS = 500
LAST_US = 253_402_300_799_999_000  # 9999-12-31T23:59:59.999Z: the last time RFC 3339 prints
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
        if self.from_us < 0 or self.to_us > LAST_US:
            raise ValidationError("the export window must lie within years 1970 to 9999")

    @property
    def labels(self) -> tuple[str, str]:
        """`from` and `to` as the manifest prints them (RFC 3339, milliseconds)."""
        return (str(format_utc(self.from_us)), str(format_utc(self.to_us)))


# -- run lines ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunChunk:
    """Up to one chunk of runs with their steps, attempts and ledger entries, read together."""

    runs: list[RunState]
    steps: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    entries: list[EntryRow]
    metrics: dict[tuple[str, str, int], str]

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
        refs: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
        for (run_id, step_id, attempt), ref in self.metrics.items():
            refs[run_id][(step_id, attempt)] = ref
        return [
            run_line(
                run, steps[run.run_id], tries[run.run_id], events[run.run_id], refs[run.run_id]
            )
            for run in self.runs
        ]


def read_chunk(
    conn: Connection, window: ExportWindow, after: Cursor | None, limit: int
) -> RunChunk:
    """One chunk of the export, consistent within its transaction."""
    page = read_started_runs(conn, window.tenant, (window.from_us, window.to_us), after, limit)
    ids = [r.run_id for r in page]
    if not ids:
        return RunChunk([], [], [], [], {})
    return RunChunk(
        page,
        read_steps_of(conn, window.tenant, ids),
        read_attempts_of(conn, window.tenant, ids),
        read_entries_of(conn, window.tenant, ids),
        metrics_refs_of(conn, window.tenant, ids),
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
    metrics: dict[tuple[str, int], str],
) -> bytes:
    """The run view plus its chain head and ledger entries, as one canonical JSON line."""
    doc = run_view(run, steps, attempt_rows, whole=True)  # an audit copy keeps every output
    mark_metrics(doc["steps"], metrics)
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


async def checkpoint_lines(
    db: Database, window: ExportWindow, *, chunk: int = CHUNK_CHECKPOINTS
) -> AsyncIterator[bytes]:
    """The tenant's checkpoints created at or after `from`, by seq (docs/ledger.md)."""
    after = 0
    while True:
        rows = await db.read(
            partial(
                read_checkpoints,
                tenant=window.tenant,
                from_us=window.from_us,
                after_seq=after,
                limit=chunk,
            )
        )
        for row in rows:
            envelope = json.loads(row.envelope_json)
            yield canonical_json({"checkpoint": envelope}).encode("utf-8") + b"\n"
        if len(rows) < chunk:
            return
        after = rows[-1].seq


async def body_lines(
    db: Database, window: ExportWindow, builder: ManifestBuilder, *, chunk: int = CHUNK_RUNS
) -> AsyncIterator[bytes]:
    """Run lines, then checkpoint lines, each accounted for in `builder` as it passes."""
    async for line in run_lines(db, window, chunk=chunk):
        builder.add(line)
        yield line
    async for line in checkpoint_lines(db, window):
        builder.add_checkpoint(line)
        yield line


async def export_lines(
    db: Database, window: ExportWindow, *, chunk: int = CHUNK_RUNS
) -> AsyncIterator[bytes]:
    """The whole export: run lines, checkpoint lines, then the manifest line."""
    builder = ManifestBuilder(window.labels)
    async for line in body_lines(db, window, builder, chunk=chunk):
        yield line
    yield builder.manifest().line()


async def export_manifest(
    db: Database, window: ExportWindow, *, chunk: int = CHUNK_RUNS
) -> Manifest:
    """Only the manifest, computed over the same lines without keeping them."""
    builder = ManifestBuilder(window.labels)
    async for _ in body_lines(db, window, builder, chunk=chunk):
        pass
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
    builder = ManifestBuilder(window.labels)
    with partial.open("wb") as out:
        buffer = bytearray()
        async for line in body_lines(db, window, builder, chunk=chunk):
            buffer += line
            if len(buffer) >= _WRITE_BUFFER:
                await asyncio.to_thread(out.write, bytes(buffer))
                buffer.clear()
        buffer += builder.manifest().line()
        await asyncio.to_thread(out.write, bytes(buffer))
    partial.replace(path)
    return builder.manifest()
