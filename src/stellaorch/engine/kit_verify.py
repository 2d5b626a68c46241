"""Verifying an offline kit offline: signature, manifest, every file, and what the files say.

Checked in this order, stopping at the first problem (which names its file): the manifest's
signature by a trusted key; `manifest.json` being exactly what was signed; each listed file
present with its `size`, `sha256` and `count`, nothing unlisted, the `rootHash`; then the
ledger with its checkpoints (the ledger export's checks), the audit entries and the step logs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import SignatureInvalid
from stellaorch.domain.providers import parse_utc
from stellaorch.engine.bundle_format import Entry, root_hash
from stellaorch.engine.export_check import ExportReport, Trusted, verify_export
from stellaorch.engine.export_manifest import ManifestBuilder
from stellaorch.engine.kit import (
    AUDIT,
    CHECKPOINTS,
    KIT_FILES,
    KIT_FORMAT,
    KIT_MANIFEST,
    KIT_MANIFEST_TYPE,
    KIT_SIGNATURE,
    LEDGER,
    LOGS,
    METRICS,
    TRACES,
)
from stellaorch.security import dsse
from stellaorch.store.blobs import blob_ref

MAX_KIT_BYTES = 1 << 32  # what verification reads into memory at most, all files together
KNOWN = frozenset({KIT_MANIFEST, KIT_SIGNATURE, *KIT_FILES})
Progress = Callable[[str], None]


class KitProblem(Exception):
    """The first problem found, naming the file it is in."""


@dataclass(frozen=True)
class KitReport:
    """Outcome of verifying a kit: ok, or the first problem; counts per file when ok."""

    ok: bool
    problem: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    signed_by: str | None = None


# -- reading ------------------------------------------------------------------------------
def read_kit(path: Path) -> dict[str, bytes]:
    """The kit's files from a directory or a .tgz (only a kit's names; bounded in size)."""
    if path.is_dir():
        return _read_directory(path)
    try:
        return _read_archive(path)
    except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise KitProblem(f"{path.name}: not a readable .tgz: {exc}") from None


def _read_directory(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for item in sorted(path.iterdir()):
        if item.name not in KNOWN or not item.is_file() or item.is_symlink():
            raise KitProblem(f"{item.name}: not a file of an offline kit")
        files[item.name] = _bounded(item.name, item.stat().st_size, item.read_bytes)
    return files


def _read_archive(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar:
            if member.name not in KNOWN or not member.isreg() or member.name in files:
                raise KitProblem(f"{member.name}: not a file of an offline kit")
            total += member.size
            handle = tar.extractfile(member)
            assert handle is not None  # a regular member always has content
            files[member.name] = _bounded(member.name, total, handle.read)
    return files


def _bounded(name: str, size: int, read: Callable[[], bytes]) -> bytes:
    if size > MAX_KIT_BYTES:
        raise KitProblem(f"{name}: the kit is larger than {MAX_KIT_BYTES} bytes")
    return read()


# -- verifying ----------------------------------------------------------------------------
def verify_kit_path(path: Path, trusted: Trusted, progress: Progress | None = None) -> KitReport:
    """Verify a kit directory or .tgz (see the module's docstring)."""
    try:
        files = read_kit(path)
        return _verify(files, trusted, progress or (lambda _: None))
    except KitProblem as problem:
        return KitReport(False, str(problem))


def verify_kit(files: Mapping[str, bytes], trusted: Trusted) -> KitReport:
    """Verify a kit's files given by name."""
    try:
        return _verify(files, trusted, lambda _: None)
    except KitProblem as problem:
        return KitReport(False, str(problem))


def _verify(files: Mapping[str, bytes], trusted: Trusted, progress: Progress) -> KitReport:
    progress(KIT_SIGNATURE)
    signed_by = _signature(files, trusted)
    progress(KIT_MANIFEST)
    manifest = _manifest(files)
    counts = _listed_files(files, manifest, progress)
    progress(LEDGER)
    _ledger(files, manifest, trusted)
    progress(AUDIT)
    _audit(files.get(AUDIT, b""), manifest)
    progress(LOGS)
    _logs(files.get(LOGS, b""), files.get(LEDGER, b""))
    progress(METRICS)
    _metrics(files.get(METRICS, b""), files.get(LEDGER, b""))
    progress(TRACES)
    _traces(files.get(TRACES, b""), files.get(LEDGER, b""), manifest)
    return KitReport(True, None, counts, signed_by)


def _signature(files: Mapping[str, bytes], trusted: Trusted) -> str:
    raw = files.get(KIT_SIGNATURE)
    if raw is None:
        raise KitProblem(f"{KIT_SIGNATURE}: missing: the kit is not signed")
    try:
        envelope = dsse.parse_envelope(json.loads(raw))
        signer = dsse.verify(envelope, KIT_MANIFEST_TYPE, trusted)
    except ValueError as exc:  # SignatureInvalid is a ValidationError, not a ValueError
        raise KitProblem(f"{KIT_SIGNATURE}: not JSON: {exc}") from None
    except SignatureInvalid as exc:
        raise KitProblem(f"{KIT_SIGNATURE}: {exc.message}") from None
    if files.get(KIT_MANIFEST) != envelope.payload:
        raise KitProblem(f"{KIT_MANIFEST}: differs from the manifest {KIT_SIGNATURE} signed")
    return signer


def _manifest(files: Mapping[str, bytes]) -> dict[str, Any]:
    manifest = json.loads(files[KIT_MANIFEST])  # signed by a trusted key: well formed
    if not isinstance(manifest, dict) or manifest.get("format") != KIT_FORMAT:
        raise KitProblem(f"{KIT_MANIFEST}: not a {KIT_FORMAT} manifest")
    return manifest


def _listed_files(
    files: Mapping[str, bytes], manifest: dict[str, Any], progress: Progress
) -> dict[str, int]:
    """Every listed file present and as listed, nothing else; the rootHash over them."""
    listed = {str(item.get("path")): item for item in manifest.get("files") or []}
    unlisted = sorted(set(files) - {KIT_MANIFEST, KIT_SIGNATURE} - set(listed))
    if unlisted:
        raise KitProblem(f"{unlisted[0]}: not listed in {KIT_MANIFEST}")
    entries, counts = [], {}
    for name, item in sorted(listed.items()):
        progress(name)
        if name not in files:
            raise KitProblem(f"{name}: missing (listed in {KIT_MANIFEST})")
        data = files[name]
        digest, count = hashlib.sha256(data).hexdigest(), data.count(b"\n")
        for key, value in (("size", len(data)), ("sha256", digest), ("count", count)):
            if item.get(key) != value:
                said = item.get(key)
                raise KitProblem(f"{name}: {key} is {value}, {KIT_MANIFEST} says {said}")
        entries.append(Entry(name, digest, len(data), False))
        counts[name] = count
    if manifest.get("rootHash") != root_hash(entries):
        raise KitProblem(f"{KIT_MANIFEST}: rootHash does not match the files it lists")
    return counts


def _ledger(files: Mapping[str, bytes], manifest: dict[str, Any], trusted: Trusted) -> None:
    """The ledger export's checks over ledger.ndjson and checkpoints.ndjson together."""
    runs = files.get(LEDGER, b"").splitlines(keepends=True)
    checkpoints = []
    for number, line in enumerate(files.get(CHECKPOINTS, b"").splitlines(), start=1):
        try:
            checkpoints.append(canonical_json({"checkpoint": json.loads(line)}).encode() + b"\n")
        except ValueError:
            raise KitProblem(f"{CHECKPOINTS}: line {number}: not JSON") from None
    builder = ManifestBuilder((str(manifest.get("from")), str(manifest.get("to"))))
    for line in runs:
        builder.add(line)
    for line in checkpoints:
        builder.add_checkpoint(line)
    report = verify_export([*runs, *checkpoints, builder.manifest().line()], trusted)
    if not report.ok:
        raise KitProblem(_where(report, len(runs)))
    tenants = {json.loads(line).get("tenant") for line in runs[:1]}
    if tenants - {manifest.get("tenant")}:
        raise KitProblem(f"{LEDGER}: line 1: a run of another tenant than the manifest's")


def _where(report: ExportReport, run_lines: int) -> str:
    """Which file and line of the kit the export check's line number is."""
    line = report.line or 0
    if line <= run_lines:
        return f"{LEDGER}: line {line}: {report.problem}"
    return f"{CHECKPOINTS}: line {line - run_lines}: {report.problem}"


def _audit(data: bytes, manifest: dict[str, Any]) -> None:
    """Audit entries of the manifest's tenant, made in its window, in id order."""
    start, end = parse_utc(str(manifest["from"])), parse_utc(str(manifest["to"]))
    last = 0
    for number, line in enumerate(data.splitlines(), start=1):
        entry = _object(AUDIT, number, line)
        where = f"{AUDIT}: line {number}"
        if entry.get("tenant") != manifest.get("tenant"):
            raise KitProblem(f"{where}: an entry of another tenant")
        if not isinstance(entry.get("id"), int) or entry["id"] <= last:
            raise KitProblem(f"{where}: entries must go by id, ascending")
        made = entry.get("createdUtc")
        if not isinstance(made, str) or not start <= parse_utc(made) < end:
            raise KitProblem(f"{where}: made outside the kit's window")
        last = entry["id"]


def _logs(data: bytes, ledger: bytes) -> None:
    """Each attempt's log belongs to an exported attempt and hashes to its logsRef."""
    attempts = {
        (run["runId"], step["stepId"], attempt["attempt"], attempt.get("logsRef"))
        for run in (json.loads(line) for line in ledger.splitlines())
        for step in run.get("steps") or []
        for attempt in step.get("attempts") or []
    }
    for number, line in enumerate(data.splitlines(), start=1):
        log = _object(LOGS, number, line)
        key = (log.get("runId"), log.get("stepId"), log.get("attempt"), log.get("logsRef"))
        if key not in attempts:
            raise KitProblem(f"{LOGS}: line {number}: not the log of an exported attempt")
        text = log.get("text")
        if isinstance(text, str) and blob_ref(text.encode("utf-8")) != log["logsRef"]:
            raise KitProblem(f"{LOGS}: line {number}: the text does not hash to its logsRef")


def _metrics(data: bytes, ledger: bytes) -> None:
    """Each attempt's metrics belong to an exported attempt and hash to its metricsRef."""
    attempts = {
        (run["runId"], step["stepId"], attempt["attempt"], attempt.get("metricsRef"))
        for run in (json.loads(line) for line in ledger.splitlines())
        for step in run.get("steps") or []
        for attempt in step.get("attempts") or []
    }
    for number, line in enumerate(data.splitlines(), start=1):
        usage = _object(METRICS, number, line)
        key = (usage.get("runId"), usage.get("stepId"), usage.get("attempt"))
        if (*key, usage.get("metricsRef")) not in attempts:
            raise KitProblem(f"{METRICS}: line {number}: not the metrics of an exported attempt")
        text = usage.get("text")
        if isinstance(text, str) and blob_ref(text.encode("utf-8")) != usage["metricsRef"]:
            raise KitProblem(f"{METRICS}: line {number}: the text does not hash to its metricsRef")


def _traces(data: bytes, ledger: bytes, manifest: dict[str, Any]) -> None:
    """Each span is one of the manifest's tenant, of an exported run."""
    runs = {json.loads(line)["runId"] for line in ledger.splitlines()}
    for number, line in enumerate(data.splitlines(), start=1):
        span = _object(TRACES, number, line)
        attributes = span.get("attributes")
        if not isinstance(attributes, dict) or attributes.get("tenant") != manifest.get("tenant"):
            raise KitProblem(f"{TRACES}: line {number}: a span of another tenant than the kit's")
        if attributes.get("runId") not in runs:
            raise KitProblem(f"{TRACES}: line {number}: not a span of an exported run")


def _object(name: str, number: int, line: bytes) -> dict[str, Any]:
    try:
        found = json.loads(line)
    except ValueError:
        raise KitProblem(f"{name}: line {number}: not JSON") from None
    if not isinstance(found, dict):
        raise KitProblem(f"{name}: line {number}: not a JSON object")
    return found
