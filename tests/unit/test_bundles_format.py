"""Bundle archives: reproducible builds, the manifest and rootHash, a safe unpack."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from bundle_helpers import DESCRIPTOR, FILES, signed_bundle, trusted, write_source
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.errors import ValidationError
from stellaorch.engine.bundle_format import (
    MANIFEST,
    SIGNATURE,
    Entry,
    build_bundle,
    read_descriptor,
    root_hash,
)
from stellaorch.engine.bundle_reader import BundleLimits, read_bundle

LIMITS = BundleLimits()


def _build_with(tmp: Path, umask: int, mtime: int) -> bytes:
    old = os.umask(umask)
    try:
        source = write_source(tmp)
    finally:
        os.umask(old)
    for path in [*source.rglob("*"), source]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return build_bundle(source, read_descriptor(source, {}))


def test_building_twice_in_other_places_with_other_umasks_and_clocks_is_byte_identical(
    tmp_path: Path,
) -> None:
    first = _build_with(tmp_path / "a", 0o022, 1_000_000)
    second = _build_with(tmp_path / "elsewhere" / "b", 0o077, 1_900_000_000)
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_archive_headers_carry_no_time_owner_or_file_name(tmp_path: Path) -> None:
    data = build_bundle(write_source(tmp_path), DESCRIPTOR)
    assert data[4:8] == b"\0\0\0\0"  # gzip MTIME
    assert data[3] & 0x08 == 0  # no FNAME field
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [MANIFEST, "lib/data.txt", "run.sh"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    assert {m.name: m.mode for m in members}["run.sh"] == 0o755
    assert {m.name: m.mode for m in members}["lib/data.txt"] == 0o644


def test_manifest_lists_every_entry_with_sha256_size_and_the_plugin(tmp_path: Path) -> None:
    checked = read_bundle(build_bundle(write_source(tmp_path), DESCRIPTOR), LIMITS, None)
    manifest = checked.manifest
    assert manifest["name"] == "hello" and manifest["version"] == "1.0.0"
    assert manifest["plugin"] == {"type": "script", "entrypoint": "run.sh"}
    listed = {e["path"]: (e["sha256"], e["size"], e["executable"]) for e in manifest["entries"]}
    expected = {p: (hashlib.sha256(c).hexdigest(), len(c), x) for p, (c, x) in FILES.items()}
    assert listed == expected


def test_root_hash_is_sha256_over_sorted_path_sha_size_mode_lines() -> None:
    entries = [Entry("b", "2" * 64, 7, True), Entry("a", "1" * 64, 3, False)]
    lines = f"a\0{'1' * 64}\x003\x000644\nb\0{'2' * 64}\x007\x000755\n".encode()
    assert root_hash(entries) == "sha256:" + hashlib.sha256(lines).hexdigest()


def test_signature_is_a_member_beside_the_manifest_and_outside_the_root_hash(
    tmp_path: Path,
) -> None:
    source = write_source(tmp_path)
    unsigned = read_bundle(build_bundle(source, DESCRIPTOR), LIMITS, None)
    key = Ed25519PrivateKey.generate()
    signed = signed_bundle(source, key)
    with tarfile.open(fileobj=io.BytesIO(signed), mode="r:gz") as tar:
        assert tar.getnames()[:2] == [MANIFEST, SIGNATURE]
    checked = read_bundle(signed, LIMITS, trusted(key))  # type: ignore[arg-type]
    assert checked.root_hash == unsigned.root_hash
    assert checked.signed_by == next(iter(trusted(key)))


def test_unpack_writes_exactly_the_files_with_their_modes(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = signed_bundle(write_source(tmp_path / "src"), key)
    target = tmp_path / "out"
    target.mkdir()
    read_bundle(data, LIMITS, trusted(key), unpack_to=target)  # type: ignore[arg-type]
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["lib/data.txt", "run.sh"]
    assert (target / "run.sh").read_bytes() == FILES["run.sh"][0]
    assert os.access(target / "run.sh", os.X_OK)
    assert not (target / "lib/data.txt").stat().st_mode & 0o111


def test_build_refuses_a_symlink_in_the_source(tmp_path: Path) -> None:
    source = write_source(tmp_path)
    (source / "escape").symlink_to("/etc/passwd")
    with pytest.raises(ValidationError, match="only regular files"):
        build_bundle(source, DESCRIPTOR)


def test_build_needs_a_descriptor_or_flags(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("x")
    with pytest.raises(ValidationError, match="not given"):
        read_descriptor(tmp_path, {})
    flags = {"name": "x", "version": "1", "plugin_type": "cli", "entrypoint": "run.sh"}
    assert read_descriptor(tmp_path, flags).file_name == "x-1.stella.bundle.tgz"


def test_descriptor_with_an_unknown_plugin_type_is_refused(tmp_path: Path) -> None:
    flags = {"name": "x", "version": "1", "plugin_type": "python", "entrypoint": "run.sh"}
    with pytest.raises(ValidationError, match="script or cli"):
        read_descriptor(tmp_path, flags)


def test_gzip_stream_of_a_build_decompresses_to_a_plain_tar(tmp_path: Path) -> None:
    data = build_bundle(write_source(tmp_path), DESCRIPTOR)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert tar.getnames()[0] == MANIFEST
