"""Every hostile or damaged archive is refused with a clear error, nothing written outside."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from bundle_helpers import (
    DESCRIPTOR,
    Member,
    entry_of,
    manifest_of,
    raw_archive,
    run_sh,
    signed_bundle,
    trusted,
    with_manifest,
    write_source,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.errors import (
    BundleInvalid,
    BundleTooLarge,
    SignatureInvalid,
    SignatureRequired,
    SignerNotTrusted,
)
from stellaorch.engine.bundle_format import MANIFEST, SIGNATURE, build_bundle
from stellaorch.engine.bundle_reader import BundleLimits, read_bundle

LIMITS = BundleLimits()


def refused(data: bytes, tmp_path: Path, limits: BundleLimits = LIMITS) -> BundleInvalid:
    """Read with unpacking into tmp/cache/stage; returns the error; checks nothing escaped."""
    stage = tmp_path / "cache" / "stage"
    stage.mkdir(parents=True)
    with pytest.raises(BundleInvalid) as caught:
        read_bundle(data, limits, None, unpack_to=stage)
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(stage)]
    assert outside == [tmp_path / "cache"]  # nothing beside the staging directory
    return caught.value


def test_absolute_path_is_refused(tmp_path: Path) -> None:
    error = refused(with_manifest([Member("/tmp/evil", b"x")]), tmp_path)
    assert "relative" in error.message


def test_dot_dot_path_is_refused(tmp_path: Path) -> None:
    error = refused(with_manifest([Member("../evil", b"x")]), tmp_path)
    assert "forbidden component '..'" in error.message


def test_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    link = Member("lib/passwd", kind=tarfile.SYMTYPE, link="/etc/passwd")
    assert "is a link" in refused(with_manifest([link]), tmp_path).message


def test_hardlink_is_refused(tmp_path: Path) -> None:
    link = Member("lib/copy", kind=tarfile.LNKTYPE, link="run.sh")
    assert "is a link" in refused(with_manifest([link]), tmp_path).message


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_files_are_refused(tmp_path: Path, kind: bytes) -> None:
    error = refused(with_manifest([Member("dev", kind=kind)]), tmp_path)
    assert "device or fifo" in error.message


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    assert "twice" in refused(with_manifest([run_sh()]), tmp_path).message


def test_a_file_the_manifest_omits_is_refused(tmp_path: Path) -> None:
    error = refused(with_manifest([Member("extra.txt", b"surprise")]), tmp_path)
    assert "extra.txt is in the archive but not in the manifest" in error.message


def test_a_file_the_manifest_adds_is_refused(tmp_path: Path) -> None:
    error = refused(with_manifest([], listed=[entry_of("ghost.txt", b"boo")]), tmp_path)
    assert "lists ghost.txt but the archive lacks it" in error.message


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    data = build_bundle(write_source(tmp_path / "src"), DESCRIPTOR)
    assert "truncated" in refused(data[: len(data) // 2], tmp_path / "t").message


def test_garbage_is_refused(tmp_path: Path) -> None:
    assert "not a .tgz" in refused(b"not a bundle at all", tmp_path).message


def test_a_huge_declared_size_is_refused_before_reading(tmp_path: Path) -> None:
    entries = [entry_of("run.sh", b"#!/bin/sh\n", True)]
    huge = json.loads(manifest_of(entries))
    huge["entries"][0]["size"] = 10 * 1024**3
    data = raw_archive([Member(MANIFEST, json.dumps(huge).encode()), run_sh()])
    error = refused(data, tmp_path)
    assert isinstance(error, BundleTooLarge) and "declares" in error.message


def test_more_declared_bytes_than_the_unpack_bound_are_refused(tmp_path: Path) -> None:
    zeros = b"\0" * (2 * 1024 * 1024)  # compresses to a few KB
    data = with_manifest([Member("zeros", zeros)], listed=[entry_of("zeros", zeros)])
    small = BundleLimits(max_entry_bytes=4 * 1024**2, max_unpacked_bytes=1024**2)
    assert isinstance(refused(data, tmp_path, small), BundleTooLarge)
    assert len(data) < 64 * 1024


def test_a_decompression_bomb_in_a_tar_header_is_stopped_while_reading(tmp_path: Path) -> None:
    # The manifest declares little; a PAX header (not a file) expands to 8 MiB.
    bomb = Member("run2.sh", b"x", pax={"comment": "A" * (8 * 1024 * 1024)})
    data = with_manifest([bomb], listed=[entry_of("run2.sh", b"x")])
    small = BundleLimits(max_entry_bytes=1024**2, max_unpacked_bytes=1024**2)
    error = refused(data, tmp_path, small)
    assert isinstance(error, BundleTooLarge) and "unpacks to more than" in error.message


def test_one_changed_content_byte_is_refused(tmp_path: Path) -> None:
    entries = [entry_of("run.sh", b"#!/bin/sh\n", True)]
    data = raw_archive([Member(MANIFEST, manifest_of(entries)),
                        Member("run.sh", b"#!/bin/sH\n", mode=0o755)])  # fmt: skip
    assert "does not match the manifest's sha256" in refused(data, tmp_path).message


def test_a_changed_mode_is_refused(tmp_path: Path) -> None:
    entries = [entry_of("run.sh", b"#!/bin/sh\n", True)]
    data = raw_archive([Member(MANIFEST, manifest_of(entries)), Member("run.sh", b"#!/bin/sh\n")])
    assert "executable flag" in refused(data, tmp_path).message


def test_a_wrong_root_hash_is_refused(tmp_path: Path) -> None:
    manifest = json.loads(manifest_of([entry_of("run.sh", b"#!/bin/sh\n", True)]))
    manifest["rootHash"] = "sha256:" + "0" * 64
    data = raw_archive([Member(MANIFEST, json.dumps(manifest).encode()), run_sh()])
    assert "rootHash" in refused(data, tmp_path).message


def test_a_manifest_that_is_not_first_is_refused(tmp_path: Path) -> None:
    data = raw_archive([run_sh(), Member(MANIFEST, b"{}")])
    assert "first member" in refused(data, tmp_path).message


def _replace_member(data: bytes, name: str, content: bytes) -> bytes:
    members = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar:
            handle = tar.extractfile(m)
            assert handle is not None
            body = content if m.name == name else handle.read()
            members.append(Member(m.name, body, mode=m.mode))
    return raw_archive(members)


def _member_json(data: bytes, name: str) -> Any:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return json.loads(handle.read())


def test_an_unsigned_bundle_does_not_verify(tmp_path: Path) -> None:
    data = build_bundle(write_source(tmp_path), DESCRIPTOR)
    with pytest.raises(SignatureRequired):
        read_bundle(data, LIMITS, {})


def test_a_signature_by_an_untrusted_key_does_not_verify(tmp_path: Path) -> None:
    data = signed_bundle(write_source(tmp_path), Ed25519PrivateKey.generate())
    with pytest.raises(SignerNotTrusted):
        read_bundle(data, LIMITS, trusted(Ed25519PrivateKey.generate()))  # type: ignore[arg-type]


def test_a_manifest_edited_after_signing_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = signed_bundle(write_source(tmp_path), key)
    manifest = _member_json(data, MANIFEST)
    manifest["plugin"]["type"] = "cli"
    edited = _replace_member(data, MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    with pytest.raises(BundleInvalid, match="signs another manifest"):
        read_bundle(edited, LIMITS, trusted(key))  # type: ignore[arg-type]


def test_a_forged_signature_value_does_not_verify(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    data = signed_bundle(write_source(tmp_path), key)
    envelope = _member_json(data, SIGNATURE)
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
    forged = _replace_member(data, SIGNATURE, json.dumps(envelope).encode())
    with pytest.raises(SignatureInvalid):
        read_bundle(forged, LIMITS, trusted(key))  # type: ignore[arg-type]
