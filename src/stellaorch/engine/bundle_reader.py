"""Reading a bundle archive: every check of docs/bundles.md, and a safe unpack.

One streaming pass over the archive: the manifest first (its declared sizes are bounded
before any file is read), then each member, refused on the first problem — absolute or
climbing paths, links, devices, fifos, duplicates, files the manifest does not list, sizes
or modes that differ from it, content whose SHA-256 differs, a truncated stream, more
decompressed bytes than the manifest allows — then files it lists that are missing, the
rootHash and last the signature against the trust store. Bytes are counted while they are
read; no header is trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stellaorch.domain.errors import BundleInvalid, BundleTooLarge, SignatureRequired
from stellaorch.engine.bundle_format import (
    MANIFEST,
    MANIFEST_TYPE,
    MAX_ENTRIES,
    SIGNATURE,
    Descriptor,
    Entry,
    check_path,
    root_hash,
    write_archive,
)
from stellaorch.security import dsse

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024
_CHUNK = 1024 * 1024
# Tar headers and padding per member (PAX headers included), beyond the files themselves.
_MEMBER_OVERHEAD = 4096


@dataclass(frozen=True)
class BundleLimits:
    """Bounds on what an archive may declare and unpack to."""

    max_entry_bytes: int = 512 * 1024 * 1024
    max_unpacked_bytes: int = 1024 * 1024 * 1024


@dataclass(frozen=True)
class CheckedBundle:
    """An archive whose every entry and rootHash matched its manifest."""

    digest: str
    manifest: Mapping[str, Any]
    manifest_raw: bytes
    envelope: dsse.Envelope | None
    signed_by: str | None

    @property
    def name(self) -> str:
        """The bundle's name."""
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        """The bundle's version."""
        return str(self.manifest["version"])

    @property
    def root_hash(self) -> str:
        """The manifest's rootHash (checked)."""
        return str(self.manifest["rootHash"])


class _Counted(io.RawIOBase):
    """The decompressed stream, refused once it yields more bytes than `limit`."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.limit, self.seen = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(min(len(buffer), _CHUNK))
        self.seen += len(data)
        if self.seen > self.limit:
            raise BundleTooLarge(f"the archive unpacks to more than {self.limit} bytes")
        buffer[: len(data)] = data
        return len(data)


def archive_digest(data: bytes) -> str:
    """`sha256:<hex>` of the archive bytes: the bundle's content address."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_bundle(
    data: bytes,
    limits: BundleLimits,
    trusted: Mapping[str, Ed25519PublicKey] | None,
    unpack_to: Path | None = None,
) -> CheckedBundle:
    """Check the archive (and its signature unless `trusted` is None), optionally unpacking.

    Files are written only under `unpack_to` (a fresh directory the caller discards when
    this raises). BundleInvalid/BundleTooLarge/Signature* name the first problem found.
    """
    gz: IO[bytes] = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")  # type: ignore[assignment]
    counted = _Counted(gz, _stream_limit(limits))
    try:
        with tarfile.open(fileobj=io.BufferedReader(counted, _CHUNK), mode="r|") as tar:
            checked = _read_members(tar, counted, limits, unpack_to)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise BundleInvalid(f"the archive is truncated or not a .tgz: {exc}") from None
    manifest, raw, envelope = checked
    signed_by = _check_signature(raw, envelope, trusted) if trusted is not None else None
    return CheckedBundle(archive_digest(data), manifest, raw, envelope, signed_by)


def _stream_limit(limits: BundleLimits) -> int:
    room = MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES + _MEMBER_OVERHEAD * (MAX_ENTRIES + 2)
    return limits.max_unpacked_bytes + room


def _read_members(
    tar: tarfile.TarFile, counted: _Counted, limits: BundleLimits, unpack_to: Path | None
) -> tuple[dict[str, Any], bytes, dsse.Envelope | None]:
    members = iter(tar)
    first = next(members, None)
    if first is None or first.name != MANIFEST:
        raise BundleInvalid(f"the archive's first member must be {MANIFEST}")
    raw = _small_member(tar, first, MAX_MANIFEST_BYTES)
    manifest, expected = parse_manifest(raw, limits)
    declared = sum(e.size for e in expected.values())
    counted.limit = min(
        counted.limit,
        declared
        + _MEMBER_OVERHEAD * (len(expected) + 2)
        + MAX_MANIFEST_BYTES
        + MAX_SIGNATURE_BYTES,
    )
    envelope: dsse.Envelope | None = None
    seen: set[str] = set()
    for member in members:
        if member.name == SIGNATURE and envelope is None and not seen:
            envelope = _parse_signature(_small_member(tar, member, MAX_SIGNATURE_BYTES))
            continue
        entry = _expected_entry(member, expected, seen)
        _read_entry(tar, member, entry, unpack_to)
        seen.add(member.name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleInvalid(f"the manifest lists {missing[0]} but the archive lacks it")
    if manifest["rootHash"] != root_hash(list(expected.values())):
        raise BundleInvalid("the manifest's rootHash does not match its entries")
    return manifest, raw, envelope


def _small_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isreg():
        raise BundleInvalid(f"{member.name} must be a regular file")
    if member.size > limit:
        raise BundleTooLarge(f"{member.name} is larger than {limit} bytes")
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read(limit + 1)


def parse_manifest(raw: bytes, limits: BundleLimits) -> tuple[dict[str, Any], dict[str, Entry]]:
    """The manifest document and its entries by path; refuses any shape it does not expect."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleInvalid(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        raise BundleInvalid(f"{MANIFEST} must be an object with an entries list")
    plugin = manifest.get("plugin")
    if not isinstance(plugin, dict) or not isinstance(manifest.get("rootHash"), str):
        raise BundleInvalid(f"{MANIFEST} must have a plugin object and a rootHash")
    Descriptor(
        str(manifest.get("name")),
        str(manifest.get("version")),
        str(plugin.get("type")),
        str(plugin.get("entrypoint")),
    ).check()
    if len(manifest["entries"]) > MAX_ENTRIES:
        raise BundleTooLarge(f"{MANIFEST} lists more than {MAX_ENTRIES} entries")
    entries: dict[str, Entry] = {}
    for item in manifest["entries"]:
        entry = _manifest_entry(item, limits)
        if entry.path in entries:
            raise BundleInvalid(f"{MANIFEST} lists {entry.path} twice")
        entries[entry.path] = entry
    if sum(e.size for e in entries.values()) > limits.max_unpacked_bytes:
        raise BundleTooLarge(f"the bundle declares more than {limits.max_unpacked_bytes} bytes")
    if plugin["entrypoint"] not in entries:
        raise BundleInvalid(f"the entrypoint {plugin['entrypoint']} is not an entry")
    return manifest, entries


def _manifest_entry(item: object, limits: BundleLimits) -> Entry:
    if not isinstance(item, dict):
        raise BundleInvalid(f"{MANIFEST} entries must be objects")
    path, sha, size = item.get("path"), item.get("sha256"), item.get("size")
    executable = item.get("executable")
    if not isinstance(path, str) or not isinstance(sha, str) or len(sha) != 64:
        raise BundleInvalid(f"{MANIFEST} entry {path!r} needs a path and a 64-hex sha256")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BundleInvalid(f"{MANIFEST} entry {path} needs a size (a non-negative integer)")
    if size > limits.max_entry_bytes:
        raise BundleTooLarge(f"entry {path} declares {size} bytes, over {limits.max_entry_bytes}")
    if not isinstance(executable, bool):
        raise BundleInvalid(f"{MANIFEST} entry {path} needs executable true or false")
    check_path(path)
    return Entry(path, sha, size, executable)


def _parse_signature(raw: bytes) -> dsse.Envelope:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise BundleInvalid(f"{SIGNATURE} is not JSON") from None
    return dsse.parse_envelope(document)


def _expected_entry(
    member: tarfile.TarInfo, expected: Mapping[str, Entry], seen: set[str]
) -> Entry:
    name = member.name
    check_path(name)
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "directory, device or fifo"
        raise BundleInvalid(f"{name} is a {kind}; a bundle holds regular files only")
    if name in seen:
        raise BundleInvalid(f"{name} appears twice in the archive")
    entry = expected.get(name)
    if entry is None:
        raise BundleInvalid(f"{name} is in the archive but not in the manifest")
    if member.size != entry.size:
        raise BundleInvalid(f"{name} is {member.size} bytes, the manifest says {entry.size}")
    if bool(member.mode & 0o100) != entry.executable:
        raise BundleInvalid(f"{name}: its mode differs from the manifest's executable flag")
    return entry


def _read_entry(
    tar: tarfile.TarFile, member: tarfile.TarInfo, entry: Entry, unpack_to: Path | None
) -> None:
    handle = tar.extractfile(member)
    assert handle is not None
    digest, total = hashlib.sha256(), 0
    out = _create(unpack_to, entry) if unpack_to is not None else None
    try:
        while chunk := handle.read(_CHUNK):
            total += len(chunk)
            if total > entry.size:
                raise BundleTooLarge(f"{entry.path} holds more bytes than it declares")
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    if total != entry.size:
        raise BundleInvalid(f"{entry.path} is truncated ({total} of {entry.size} bytes)")
    if digest.hexdigest() != entry.sha256:
        raise BundleInvalid(f"{entry.path}: its content does not match the manifest's sha256")


def _create(root: Path, entry: Entry) -> IO[bytes]:
    """A new file for the entry under `root` (never following a link, never replacing)."""
    target = root.joinpath(*entry.path.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise BundleInvalid(f"{entry.path} would be written outside the cache")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o755 if entry.executable else 0o644)
    return os.fdopen(fd, "wb")


def _check_signature(
    raw: bytes, envelope: dsse.Envelope | None, trusted: Mapping[str, Ed25519PublicKey]
) -> str:
    if envelope is None:
        raise SignatureRequired(f"the bundle is not signed (no {SIGNATURE})")
    if envelope.payload != raw:
        raise BundleInvalid(f"{SIGNATURE} signs another manifest than this archive's")
    return dsse.verify(envelope, MANIFEST_TYPE, trusted)


def sign_archive(data: bytes, key: Ed25519PrivateKey, limits: BundleLimits) -> bytes:
    """The archive re-written with a DSSE signature over its manifest (replacing any)."""
    members: list[tuple[str, bytes, bool]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        read_bundle(data, limits, None)  # a broken archive is never signed
        for member in tar:
            handle = tar.extractfile(member)
            assert handle is not None
            if member.name != SIGNATURE:
                members.append((member.name, handle.read(), bool(member.mode & 0o100)))
    manifest = members[0][1]
    envelope = dsse.sign(MANIFEST_TYPE, manifest, key)
    signature = json.dumps(envelope.to_json(), sort_keys=True).encode()
    return write_archive([members[0], (SIGNATURE, signature, False), *members[1:]])
