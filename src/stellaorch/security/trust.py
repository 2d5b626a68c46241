"""The trust store: the Ed25519 public keys that may sign bundles and DAG versions.

Local files only (no fetch, ever): one `<keyid>.pem` per trusted key in the trust directory.
A key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key. Removing a
key revokes it: everything it signed stops verifying, at import and at load.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stellaorch.domain.errors import NotFound, ValidationError

_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_KEY_FILE_BYTES = 64 * 1024


def key_id(public: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of SHA-256 over its raw public bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_from_pem(data: bytes, source: str) -> Ed25519PublicKey:
    """The Ed25519 public key of a PEM file: a public key, or a private key's public half."""
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public: object = private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"{source} is not a PEM key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ValidationError(f"{source} is not an Ed25519 key")
    return public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (never printed, never copied)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ValidationError(f"cannot read key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError(f"{path} is not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class TrustedKey:
    """A key of the trust store."""

    key_id: str
    key: Ed25519PublicKey

    @property
    def pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class TrustStore:
    """The trusted keys in one directory, read afresh on every call (revocation is immediate)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._ids: frozenset[str] | None = None
        self._stamp = 0

    def trusted_ids(self) -> frozenset[str]:
        """The trusted key ids; re-read only when the directory changed (one stat per call).

        Keys are added and removed by renaming files in or out, which always changes the
        directory's mtime. The stamp is taken before reading, so a change during the read is
        seen on the next call.
        """
        try:
            stamp = self.directory.stat().st_mtime_ns
        except OSError:
            return frozenset()
        if self._ids is None or stamp != self._stamp:
            self._stamp = stamp
            self._ids = frozenset(self.keys())
        return self._ids

    def keys(self) -> dict[str, Ed25519PublicKey]:
        """Every trusted key by id; a file whose name is not its key's id is ignored."""
        found: dict[str, Ed25519PublicKey] = {}
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("*.pem")):
            try:
                public = public_key_from_pem(path.read_bytes()[:MAX_KEY_FILE_BYTES], str(path))
            except (OSError, ValidationError):
                continue
            if key_id(public) == path.stem:
                found[path.stem] = public
        return found

    def list(self) -> list[TrustedKey]:
        """The trusted keys, by key id."""
        return [TrustedKey(k, v) for k, v in sorted(self.keys().items())]

    def add_public(self, public: Ed25519PublicKey) -> TrustedKey:
        """Trust a key (idempotent); the file is written whole, then renamed into place."""
        trusted = TrustedKey(key_id(public), public)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.directory / f"{trusted.key_id}.pem"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(trusted.pem)
        os.replace(tmp, target)
        return trusted

    def add_file(self, path: Path) -> TrustedKey:
        """Trust the Ed25519 key of a PEM file (only the public half is kept)."""
        try:
            data = path.read_bytes()[:MAX_KEY_FILE_BYTES]
        except OSError as exc:
            raise ValidationError(f"cannot read key {path}: {exc.strerror}") from None
        return self.add_public(public_key_from_pem(data, str(path)))

    def remove(self, kid: str) -> None:
        """Revoke a key: remove it from the store (NotFound when it is not there)."""
        if not _KEY_ID.match(kid):
            raise ValidationError(f"{kid!r} is not a key id (16 lowercase hex digits)")
        try:
            (self.directory / f"{kid}.pem").unlink()
        except FileNotFoundError:
            raise NotFound(f"key {kid} is not in the trust store {self.directory}") from None
