"""The bundle format: descriptor, manifest, rootHash and the deterministic archive (writing).

`NAME-VERSION.stella.bundle.tgz` is a gzip (mtime 0, no file name) of a PAX tar whose first
member is `manifest.json`, then `signature.dsse.json` once signed, then every file of the
bundle sorted by path; every member has mtime 0, uid/gid 0, empty owner names and mode 0644
(0755 when executable). See docs/bundles.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import BundleInvalid, ValidationError
from stellaorch.domain.spec_yaml import load_yaml

FORMAT = "stella.bundle/v1"
MANIFEST = "manifest.json"
SIGNATURE = "signature.dsse.json"
RESERVED = frozenset({MANIFEST, SIGNATURE})
MANIFEST_TYPE = "application/vnd.stella.bundle.manifest+json"
DESCRIPTORS = ("stella-bundle.yaml", "stella-bundle.yml", "stella-bundle.json")
PLUGIN_TYPES = frozenset({"script", "cli"})
MAX_ENTRIES = 10_000
MAX_PATH_CHARS = 1024
MAX_DESCRIPTOR_BYTES = 64 * 1024
GZIP_LEVEL = 6
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_COMPONENT = re.compile(r"^[A-Za-z0-9_+=@,-][A-Za-z0-9 _.+=@,~-]*$|^\.[A-Za-z0-9_+=@,~-][^/]*$")


@dataclass(frozen=True)
class Descriptor:
    """What a bundle is: name, version and how its plugin runs (type and entrypoint)."""

    name: str
    version: str
    plugin_type: str
    entrypoint: str

    def check(self) -> None:
        """Refuse a name, version, plugin type or entrypoint the format does not allow."""
        if not NAME.match(self.name):
            raise ValidationError(f"bundle name {self.name!r} must match {NAME.pattern}")
        if not VERSION.match(self.version):
            raise ValidationError(f"bundle version {self.version!r} must match {VERSION.pattern}")
        if self.plugin_type not in PLUGIN_TYPES:
            raise ValidationError(f"plugin type {self.plugin_type!r} must be script or cli")
        check_path(self.entrypoint)

    @property
    def file_name(self) -> str:
        """`NAME-VERSION.stella.bundle.tgz`."""
        return f"{self.name}-{self.version}.stella.bundle.tgz"


@dataclass(frozen=True)
class Entry:
    """One file of a bundle as the manifest lists it."""

    path: str
    sha256: str
    size: int
    executable: bool

    def line(self) -> bytes:
        """Its rootHash line: `path NUL sha256 NUL size NUL mode LF` (mode 0644 or 0755)."""
        mode = "0755" if self.executable else "0644"
        return f"{self.path}\0{self.sha256}\0{self.size}\0{mode}\n".encode()

    def as_json(self) -> dict[str, Any]:
        """The manifest's entry object."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "executable": self.executable,
        }


def check_path(path: str) -> None:
    """Refuse a member path that is absolute, climbs (`..`), is empty or has odd characters."""
    parts = path.split("/")
    if not path or len(path) > MAX_PATH_CHARS or path.startswith("/"):
        raise BundleInvalid(f"entry path {path!r} must be relative and at most 1024 characters")
    for part in parts:
        if part in ("", ".", "..") or not _COMPONENT.match(part):
            raise BundleInvalid(f"entry path {path!r} has a forbidden component {part!r}")


def root_hash(entries: Sequence[Entry]) -> str:
    """`sha256:` over the entries' lines, sorted by path (the manifest itself is not one)."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(entry.line())
    return "sha256:" + digest.hexdigest()


def manifest_for(descriptor: Descriptor, entries: Sequence[Entry]) -> dict[str, Any]:
    """The manifest document of a bundle."""
    ordered = sorted(entries, key=lambda e: e.path)
    return {
        "format": FORMAT,
        "name": descriptor.name,
        "version": descriptor.version,
        "plugin": {"type": descriptor.plugin_type, "entrypoint": descriptor.entrypoint},
        "entries": [e.as_json() for e in ordered],
        "rootHash": root_hash(ordered),
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as it is stored and signed: canonical JSON, UTF-8."""
    return canonical_json(manifest).encode("utf-8")


# --- reading a source directory ---------------------------------------------------------------
def read_descriptor(directory: Path, overrides: Mapping[str, str | None]) -> Descriptor:
    """The descriptor file of `directory` (if any), with flags given in `overrides` on top."""
    found: dict[str, Any] = {}
    for name in DESCRIPTORS:
        path = directory / name
        if path.is_file():
            found = _descriptor_document(path)
            break
    plugin: dict[str, Any] = found["plugin"] if isinstance(found.get("plugin"), dict) else {}
    values = {
        "name": found.get("name"),
        "version": found.get("version"),
        "plugin_type": plugin.get("type"),
        "entrypoint": plugin.get("entrypoint"),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValidationError(
            f"bundle {', '.join(missing)} not given: write {DESCRIPTORS[0]} in {directory} "
            "or pass --name, --version, --plugin-type and --entrypoint"
        )
    descriptor = Descriptor(**{k: str(v) for k, v in values.items()})
    descriptor.check()
    return descriptor


def _descriptor_document(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if len(raw) > MAX_DESCRIPTOR_BYTES:
        raise ValidationError(f"{path} is larger than {MAX_DESCRIPTOR_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path} cannot be read: {exc}") from None
    if not isinstance(document, dict):
        raise ValidationError(f"{path} must hold an object (name, version, plugin)")
    return document


def source_files(directory: Path) -> list[tuple[str, Path, bool]]:
    """(path, file, executable) of every regular file under `directory`, sorted by path.

    The descriptor is left out (the manifest says what it said); links, devices and fifos
    are refused, so what is built is exactly what is on disk.
    """
    if not directory.is_dir():
        raise ValidationError(f"{directory} is not a directory")
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode) or relative in DESCRIPTORS:
            continue
        if not stat.S_ISREG(mode):
            raise ValidationError(f"{relative}: only regular files go into a bundle (no links)")
        check_path(relative)
        if relative in RESERVED:
            raise ValidationError(f"{relative}: the name is reserved for the bundle's own files")
        files.append((relative, path, bool(mode & 0o100)))
    if len(files) > MAX_ENTRIES:
        raise ValidationError(f"a bundle holds at most {MAX_ENTRIES} files")
    return sorted(files)


# --- writing the archive ----------------------------------------------------------------------
def _member(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_archive(members: Sequence[tuple[str, bytes, bool]]) -> bytes:
    """A deterministic .tgz of (path, content, executable), in the order given."""
    out = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, content, executable in members:
            tar.addfile(_member(name, len(content), executable), io.BytesIO(content))
    return out.getvalue()


def build_bundle(directory: Path, descriptor: Descriptor) -> bytes:
    """The unsigned archive of `directory`: byte-identical for the same files, anywhere."""
    files = source_files(directory)
    contents = [(rel, path.read_bytes(), ex) for rel, path, ex in files]
    entries = [
        Entry(rel, hashlib.sha256(data).hexdigest(), len(data), ex) for rel, data, ex in contents
    ]
    if descriptor.entrypoint not in {e.path for e in entries}:
        raise ValidationError(f"entrypoint {descriptor.entrypoint} is not a file of {directory}")
    manifest = manifest_bytes(manifest_for(descriptor, entries))
    return write_archive([(MANIFEST, manifest, False), *contents])
