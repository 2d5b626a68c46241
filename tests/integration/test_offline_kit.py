"""The offline kit: signed, byte-identical twice, and every tampered file named by verify."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stellaorch.domain.audit import Operator
from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import ExportTooLarge
from stellaorch.domain.providers import parse_utc
from stellaorch.engine.bundle_format import write_archive
from stellaorch.engine.export import ExportWindow
from stellaorch.engine.kit import OfflineKit
from stellaorch.engine.kit_verify import read_kit, verify_kit, verify_kit_path
from stellaorch.plugins.base import PluginResult, StepContext
from stellaorch.security.keys import generate_key, newest_ed25519_key
from stellaorch.security.trust import key_id
from stellaorch.store import blobs

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

WINDOW = ExportWindow("acme", parse_utc("2000-01-01T00:00:00Z"), parse_utc("2100-01-01T00:00:00Z"))
LOG_TEXT = "fetched 3 feeds\nwrote 42 rows\n"


class Chatty:
    """A step that logs two lines."""

    name = "chatty"
    version = "1"

    async def run(self, ctx: StepContext) -> PluginResult:
        return PluginResult(outputs={"rows": 42}, logs=LOG_TEXT)


@pytest.fixture
async def harness(make_harness: MakeHarness, tmp_path: Path) -> Harness:
    """Finished runs with logs, a checkpoint and an audit entry, signed by the server's key."""
    keys = tmp_path / "keys"
    generate_key(keys)
    h = await make_harness(keys_dir=keys, trace_file=tmp_path / "traces.ndjson")
    h.orchestrator.plugins.register(Chatty())
    steps = [{"id": "fetch", "plugin": "chatty"}, {"id": "load", "plugin": "noop"}]
    await h.publish(h.spec("feed", steps, [("fetch", "load")]))
    created = [await h.create("feed", {"n": n}) for n in range(2)]
    async with h.worker():
        for c in created:
            await h.wait_done(c.run.run_id)
    await h.orchestrator.checkpoints.on_demand("acme", Operator("ops", "kit test"))
    await add_usage_and_spans(h, [c.run.run_id for c in created], tmp_path / "traces.ndjson")
    return h


async def add_usage_and_spans(h: Harness, run_ids: list[str], trace_file: Path) -> None:
    """A span file with spans of the runs, of another tenant, of no run, and a torn line."""
    spans = [
        span("orchestrator.step", 20, {"tenant": "acme", "runId": run_ids[1]}),
        span("orchestrator.run", 10, {"tenant": "acme", "runId": run_ids[0]}),
        span("orchestrator.run", 15, {"tenant": "globex", "runId": run_ids[0]}),
        span("orchestrator.run", 16, {"tenant": "acme", "runId": "not-exported"}),
        span("http.request", 17, {}),
    ]
    lines = [json.dumps(s) for s in spans]
    text = "\n".join([*lines[:2], '{"cut short', *lines[2:]]) + "\n"
    await asyncio.to_thread(trace_file.write_text, text)


def span(name: str, start: int, attributes: dict[str, str]) -> dict[str, Any]:
    """A span line as the span file holds it."""
    return {
        "name": name,
        "spanId": f"{start:016x}",
        "startUnixNano": start,
        "attributes": attributes,
    }


def trusted(h: Harness) -> dict[str, Ed25519PublicKey]:
    key = newest_ed25519_key(h.orchestrator.env.settings.keys_dir)
    assert key is not None
    return {key_id(key.public_key()): key.public_key()}


async def kit_files(h: Harness, tmp_path: Path) -> dict[str, bytes]:
    path = tmp_path / "kit.tgz"
    path.write_bytes(await h.orchestrator.kits.build(WINDOW))
    return read_kit(path)


def problem_of(h: Harness, files: dict[str, bytes]) -> str:
    report = verify_kit(files, trusted(h))
    assert not report.ok
    return str(report.problem)


# -- building -------------------------------------------------------------------------
async def test_a_kit_exported_twice_is_byte_identical(harness: Harness) -> None:
    first = await harness.orchestrator.kits.build(WINDOW)
    second = await harness.orchestrator.kits.build(WINDOW)
    assert first == second


async def test_a_kit_holds_ledger_checkpoints_audit_and_logs_and_verifies(
    harness: Harness, tmp_path: Path
) -> None:
    archive = tmp_path / "kit.tgz"
    archive.write_bytes(await harness.orchestrator.kits.build(WINDOW))
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "manifest.json",
        "manifest.dsse.json",
        "audit.ndjson",
        "checkpoints.ndjson",
        "ledger.ndjson",
        "logs.ndjson",
        "metrics.ndjson",
        "traces.ndjson",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}

    report = verify_kit_path(archive, trusted(harness))

    assert report.ok, report
    assert report.counts == {
        "audit.ndjson": 1,
        "checkpoints.ndjson": 1,
        "ledger.ndjson": 2,
        "logs.ndjson": 2,
        "metrics.ndjson": 4,  # every attempt's usage
        "traces.ndjson": 2,
    }
    files = read_kit(archive)
    logs = [json.loads(line) for line in files["logs.ndjson"].splitlines()]
    assert {log["text"] for log in logs} == {LOG_TEXT}
    usage = [json.loads(line) for line in files["metrics.ndjson"].splitlines()]
    assert {(u["stepId"], u["attempt"]) for u in usage} == {("fetch", 1), ("load", 1)}
    assert all(blobs.blob_ref(u["text"].encode()) == u["metricsRef"] for u in usage)
    spans = [json.loads(line) for line in files["traces.ndjson"].splitlines()]
    assert [s["startUnixNano"] for s in spans] == [10, 20]  # the kit's tenant and runs, in order


async def test_a_kit_unpacked_into_a_directory_verifies_too(
    harness: Harness, tmp_path: Path
) -> None:
    files = await kit_files(harness, tmp_path)
    directory = tmp_path / "kit"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)

    assert verify_kit_path(directory, trusted(harness)).ok
    (directory / "notes.txt").write_text("mine")
    assert "notes.txt: not a file of an offline kit" in str(
        verify_kit_path(directory, trusted(harness)).problem
    )


async def test_a_window_larger_than_the_limit_is_refused(harness: Harness) -> None:
    env = harness.orchestrator.env
    small = env.settings.model_copy(update={"export_max_bytes": 1024})
    with pytest.raises(ExportTooLarge):
        await OfflineKit(type(env)(**{**env.__dict__, "settings": small})).build(WINDOW)


# -- tampering: each file, the manifest and the signature ------------------------------
def edit_line(content: bytes, edit: Any) -> bytes:
    lines = content.splitlines(keepends=True)
    document = json.loads(lines[0])
    edit(document)
    lines[0] = canonical_json(document).encode() + b"\n"
    return b"".join(lines)


def resigned(files: dict[str, bytes], name: str, content: bytes) -> dict[str, bytes]:
    """`name` replaced; the manifest's size, sha256 and rootHash recomputed (not re-signed)."""
    import hashlib

    from stellaorch.engine.bundle_format import Entry, root_hash

    manifest = json.loads(files["manifest.json"])
    for item in manifest["files"]:
        if item["path"] == name:
            item.update(size=len(content), sha256=hashlib.sha256(content).hexdigest())
    entries = [Entry(i["path"], i["sha256"], i["size"], False) for i in manifest["files"]]
    manifest["rootHash"] = root_hash(entries)
    return {**files, name: content, "manifest.json": canonical_json(manifest).encode()}


@pytest.mark.parametrize(
    "name",
    [
        "ledger.ndjson",
        "checkpoints.ndjson",
        "audit.ndjson",
        "logs.ndjson",
        "metrics.ndjson",
        "traces.ndjson",
    ],
)
async def test_a_tampered_file_is_named(harness: Harness, tmp_path: Path, name: str) -> None:
    files = await kit_files(harness, tmp_path)
    tampered = {**files, name: files[name].replace(b"a", b"b", 1)}

    problem = problem_of(harness, tampered)

    assert problem.startswith(f"{name}: sha256 is "), problem


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("ledger.ndjson", lambda d: d.update(status="failed"), "ledger.ndjson: line 1: "),
        ("audit.ndjson", lambda d: d.update(tenant="globex"), "audit.ndjson: line 1: "),
        ("logs.ndjson", lambda d: d.update(text="nothing here"), "logs.ndjson: line 1: "),
        ("metrics.ndjson", lambda d: d.update(text="{}"), "metrics.ndjson: line 1: "),
        (
            "traces.ndjson",
            lambda d: d["attributes"].update(tenant="globex"),
            "traces.ndjson: line 1: ",
        ),
        (
            "checkpoints.ndjson",
            lambda d: d.update(payload=base64.b64encode(b"{}").decode()),
            "checkpoints.ndjson: line 1: ",
        ),
    ],
)
async def test_a_file_edited_consistently_with_its_manifest_is_caught_by_the_signature(
    harness: Harness, tmp_path: Path, name: str, edit: Any, expected: str
) -> None:
    files = await kit_files(harness, tmp_path)
    forged = resigned(files, name, edit_line(files[name], edit))

    signed = "manifest.json: differs from the manifest manifest.dsse.json signed"
    assert problem_of(harness, forged) == signed
    # Re-signed by the server's own key (as if it had exported it), the content check names it.
    key = newest_ed25519_key(harness.orchestrator.env.settings.keys_dir)
    assert key is not None
    assert problem_of(harness, sign_manifest(forged, key)).startswith(expected)


def sign_manifest(files: dict[str, bytes], key: Ed25519PrivateKey) -> dict[str, bytes]:
    from stellaorch.engine.kit import KIT_MANIFEST_TYPE
    from stellaorch.security import dsse

    envelope = dsse.sign(KIT_MANIFEST_TYPE, files["manifest.json"], key).to_json()
    return {**files, "manifest.dsse.json": canonical_json(envelope).encode()}


async def test_a_tampered_manifest_or_signature_is_named(harness: Harness, tmp_path: Path) -> None:
    files = await kit_files(harness, tmp_path)
    manifest = json.loads(files["manifest.json"])
    manifest["tenant"] = "globex"
    edited = {**files, "manifest.json": canonical_json(manifest).encode()}
    envelope = json.loads(files["manifest.dsse.json"])
    envelope["signatures"][0]["sig"] = base64.b64encode(b"\0" * 64).decode()
    bad_signature = {**files, "manifest.dsse.json": canonical_json(envelope).encode()}
    unsigned = {k: v for k, v in files.items() if k != "manifest.dsse.json"}
    foreign = sign_manifest(files, Ed25519PrivateKey.generate())

    assert problem_of(harness, edited).startswith("manifest.json: differs from the manifest")
    assert problem_of(harness, bad_signature).startswith("manifest.dsse.json: the signature by")
    assert problem_of(harness, unsigned) == "manifest.dsse.json: missing: the kit is not signed"
    assert problem_of(harness, foreign).startswith("manifest.dsse.json: no signature is by a")


async def test_a_missing_or_extra_file_is_named(harness: Harness, tmp_path: Path) -> None:
    files = await kit_files(harness, tmp_path)
    missing = {k: v for k, v in files.items() if k != "audit.ndjson"}

    assert problem_of(harness, missing) == "audit.ndjson: missing (listed in manifest.json)"
    archive = tmp_path / "extra.tgz"
    archive.write_bytes(write_archive([*((k, v, False) for k, v in files.items()),
                                       ("../evil.sh", b"x", True)]))  # fmt: skip
    report = verify_kit_path(archive, trusted(harness))
    assert report.problem == "../evil.sh: not a file of an offline kit"
    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(io.BytesIO(b"not gzip").getvalue())
    assert "garbage.tgz: not a readable .tgz" in str(
        verify_kit_path(garbage, trusted(harness)).problem
    )
