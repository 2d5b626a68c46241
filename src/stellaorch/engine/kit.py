"""The offline kit: a window of one tenant's ledger, checkpoints, audit, step logs, step
metrics and trace spans, signed.

`stella orch export` writes it as a deterministic .tgz (or its files into a directory):
`manifest.json` (each file's `count`, `sha256` and `size`, and a `rootHash` over them),
`manifest.dsse.json` (the manifest signed with the server's key), then the NDJSON files sorted
by name. The same window of an unchanged store gives the same bytes. Format and checks:
docs/ledger-export.md#the-offline-kit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import ExportTooLarge
from stellaorch.engine.audit import audit_view
from stellaorch.engine.bundle_format import Entry, root_hash, write_archive
from stellaorch.engine.checkpoints import server_signing_key
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.export import ExportWindow, checkpoint_lines, run_lines
from stellaorch.security import dsse
from stellaorch.store import blobs
from stellaorch.store.audit import select_audit_window

KIT_FORMAT = "stella.export/v1"
KIT_MANIFEST = "manifest.json"
KIT_SIGNATURE = "manifest.dsse.json"
KIT_MANIFEST_TYPE = "application/vnd.stella.export.manifest+json"
LEDGER, CHECKPOINTS, AUDIT, LOGS, METRICS, TRACES = (
    "ledger.ndjson",
    "checkpoints.ndjson",
    "audit.ndjson",
    "logs.ndjson",
    "metrics.ndjson",
    "traces.ndjson",
)
# Sorted: the archive's order after the manifest.
KIT_FILES = (AUDIT, CHECKPOINTS, LEDGER, LOGS, METRICS, TRACES)
AUDIT_CHUNK = 500


@dataclass
class KitFile:
    """One NDJSON file of the kit as it is gathered: its lines, counted and bounded."""

    name: str
    lines: list[bytes] = field(default_factory=list)
    size: int = 0

    def entry(self) -> Entry:
        """The file as the manifest lists it (and rootHash covers it)."""
        data = self.content()
        return Entry(self.name, hashlib.sha256(data).hexdigest(), len(data), False)

    def content(self) -> bytes:
        """The file's bytes."""
        return b"".join(self.lines)


class KitBuilder:
    """Gathers the kit's files while staying under the export limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.files = {name: KitFile(name) for name in KIT_FILES}

    def add(self, name: str, document: Any) -> None:
        """Append one canonical JSON line to a file."""
        self.add_line(name, canonical_json(document).encode("utf-8") + b"\n")

    def add_line(self, name: str, line: bytes) -> None:
        """Append a line made elsewhere (the ledger export's run lines)."""
        self.total += len(line)
        if self.total > self.limit:
            raise ExportTooLarge(
                f"the export of this window exceeds {self.limit} bytes "
                "(STELLA_ORCH_EXPORT_MAX_BYTES): export shorter windows"
            )
        kit_file = self.files[name]
        kit_file.lines.append(line)
        kit_file.size += len(line)


def kit_manifest(window: ExportWindow, files: list[KitFile]) -> dict[str, Any]:
    """The manifest document: format, tenant, window, files (by name) and their rootHash."""
    entries = [f.entry() for f in files]
    listed = [
        {"path": e.path, "count": len(f.lines), "sha256": e.sha256, "size": e.size}
        for e, f in zip(entries, files, strict=True)
    ]
    start, end = window.labels
    return {
        "format": KIT_FORMAT,
        "tenant": window.tenant,
        "from": start,
        "to": end,
        "files": listed,
        "rootHash": root_hash(entries),
    }


class OfflineKit:
    """Builds the signed offline kit of a window from the engine's store."""

    def __init__(self, env: EngineEnv, key: Ed25519PrivateKey | None = None) -> None:
        self.env = env
        self._key = key

    async def build(self, window: ExportWindow) -> bytes:
        """The kit as a deterministic .tgz."""
        key = self._key or server_signing_key(self.env)
        builder = KitBuilder(self.env.settings.export_max_bytes)
        await self._gather(window, builder)
        files = [builder.files[name] for name in KIT_FILES]
        manifest = canonical_json(kit_manifest(window, files)).encode("utf-8")
        envelope = dsse.sign(KIT_MANIFEST_TYPE, manifest, key).to_json()
        signature = canonical_json(envelope).encode("utf-8")
        members = [(f.name, f.content(), False) for f in files]
        return write_archive(
            [(KIT_MANIFEST, manifest, False), (KIT_SIGNATURE, signature, False), *members]
        )

    async def _gather(self, window: ExportWindow, builder: KitBuilder) -> None:
        runs: set[str] = set()
        async for line in run_lines(self.env.db, window):
            builder.add_line(LEDGER, line)
            run = json.loads(line)
            runs.add(run["runId"])
            for log in await self._logs_of(window.tenant, run):
                builder.add(LOGS, log)
            for usage in await self._metrics_of(window.tenant, run):
                builder.add(METRICS, usage)
        for span in await asyncio.to_thread(self._spans_of, window.tenant, runs):
            builder.add(TRACES, span)
        async for line in checkpoint_lines(self.env.db, window):
            builder.add(CHECKPOINTS, json.loads(line)["checkpoint"])
        async for entry in self._audit(window):
            builder.add(AUDIT, entry)

    async def _logs_of(self, tenant: str, run: dict[str, Any]) -> list[dict[str, Any]]:
        """Every attempt's log of a run: steps in DAG order, attempts in order."""
        return await self._attempt_blobs(tenant, run, "logsRef")

    async def _metrics_of(self, tenant: str, run: dict[str, Any]) -> list[dict[str, Any]]:
        """Every attempt's resource metrics document of a run, as stored (it hashes to its ref)."""
        return await self._attempt_blobs(tenant, run, "metricsRef")

    async def _attempt_blobs(
        self, tenant: str, run: dict[str, Any], ref_key: str
    ) -> list[dict[str, Any]]:
        """The blob each attempt of a run names under `ref_key`, one line per attempt; `text`
        is null when the store no longer holds it."""
        wanted = [
            (step["stepId"], attempt["attempt"], attempt[ref_key])
            for step in run.get("steps") or []
            for attempt in step.get("attempts") or []
            if attempt.get(ref_key)
        ]
        if not wanted:
            return []

        def read(conn: Any) -> list[dict[str, Any]]:
            found = []
            for step_id, attempt, ref in wanted:
                blob = blobs.get_blob(conn, tenant, ref)
                text = blob[0].decode("utf-8", "replace") if blob else None
                found.append(
                    {
                        "runId": run["runId"],
                        "stepId": step_id,
                        "attempt": attempt,
                        ref_key: ref,
                        "text": text,
                    }
                )
            return found

        return await self.env.db.read(read)

    def _spans_of(self, tenant: str, runs: set[str]) -> list[dict[str, Any]]:
        """The spans of the exported runs found in this process's span file, in start order.

        The file is local to the process (docs/observability.md): a kit made by another
        replica holds the spans that replica wrote. Lines that are not span objects (a write
        cut short by a crash) are skipped.
        """
        path = self.env.settings.trace_file
        spans: list[dict[str, Any]] = []
        if not runs or not path.is_file():
            return spans
        with path.open("rb") as handle:
            for raw in handle:
                try:
                    span = json.loads(raw)
                except ValueError:
                    continue
                attributes = span.get("attributes") if isinstance(span, dict) else None
                if not isinstance(attributes, dict) or attributes.get("tenant") != tenant:
                    continue
                if attributes.get("runId") in runs:
                    spans.append(span)
        spans.sort(key=_span_order)
        return spans

    async def _audit(self, window: ExportWindow) -> AsyncIterator[dict[str, Any]]:
        """The tenant's audit entries made in the window, by id, a chunk per transaction."""
        after, span = 0, (window.from_us, window.to_us)
        while True:
            rows = await self.env.db.read(
                partial(
                    select_audit_window,
                    tenant=window.tenant,
                    window=span,
                    after_id=after,
                    limit=AUDIT_CHUNK,
                )
            )
            for row in rows:
                yield audit_view(row)
            if len(rows) < AUDIT_CHUNK:
                return
            after = rows[-1]["id"]


def _span_order(span: dict[str, Any]) -> tuple[int, str]:
    """Spans by start time, then id: the same file gives the same order."""
    start = span.get("startUnixNano")
    return (start if isinstance(start, int) else 0, str(span.get("spanId")))
