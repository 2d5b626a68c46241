"""Builders for bundle tests: a source directory, keys, and hand-made (hostile) archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.engine.bundle_format import (
    MANIFEST,
    Descriptor,
    Entry,
    build_bundle,
    manifest_bytes,
    manifest_for,
)
from stellaorch.engine.bundle_reader import BundleLimits, sign_archive
from stellaorch.security.trust import key_id

DESCRIPTOR = Descriptor("hello", "1.0.0", "script", "run.sh")
FILES = {"run.sh": (b"#!/bin/sh\necho hello\n", True), "lib/data.txt": (b"forty-two\n", False)}


def write_source(directory: Path, files: dict[str, tuple[bytes, bool]] = FILES) -> Path:
    """A bundle source directory with a stella-bundle.yaml descriptor."""
    for name, (content, executable) in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o755 if executable else 0o644)
    (directory / "stella-bundle.yaml").write_text(
        "name: hello\nversion: '1.0.0'\nplugin: {type: script, entrypoint: run.sh}\n"
    )
    return directory


def signed_bundle(source: Path, key: Ed25519PrivateKey) -> bytes:
    """The signed archive of a source directory."""
    return sign_archive(build_bundle(source, DESCRIPTOR), key, BundleLimits())


def trusted(key: Ed25519PrivateKey) -> dict[str, object]:
    """A trust mapping holding only `key`."""
    return {key_id(key.public_key()): key.public_key()}


@dataclass
class Member:
    """One hand-made tar member."""

    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    mode: int = 0o644
    link: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def entry_of(name: str, data: bytes, executable: bool = False) -> Entry:
    """The manifest entry that matches `data`."""
    return Entry(name, hashlib.sha256(data).hexdigest(), len(data), executable)


def manifest_of(entries: Sequence[Entry], descriptor: Descriptor = DESCRIPTOR) -> bytes:
    """A well-formed manifest listing `entries`."""
    return manifest_bytes(manifest_for(descriptor, entries))


def raw_archive(members: Sequence[Member]) -> bytes:
    """A .tgz of exactly these members, whatever they are."""
    out = io.BytesIO()
    gz = gzip.GzipFile(fileobj=out, mode="wb", mtime=0)
    with gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.linkname = m.kind, m.mode, m.link
            info.size = len(m.data) if m.kind == tarfile.REGTYPE else 0
            info.pax_headers = m.pax
            tar.addfile(info, io.BytesIO(m.data) if m.kind == tarfile.REGTYPE else None)
    return out.getvalue()


def run_sh() -> Member:
    """The entrypoint member that every hand-made manifest lists."""
    return Member("run.sh", b"#!/bin/sh\n", mode=0o755)


def with_manifest(extra: Sequence[Member], listed: Sequence[Entry] = ()) -> bytes:
    """An archive: a manifest listing run.sh and `listed`, then run.sh and `extra`."""
    entries = [entry_of("run.sh", b"#!/bin/sh\n", True), *listed]
    return raw_archive([Member(MANIFEST, manifest_of(entries)), run_sh(), *extra])
