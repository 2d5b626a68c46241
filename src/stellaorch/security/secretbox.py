"""Secret values at rest: AES-256-GCM under a key-encryption key (KEK) kept in a local file.

The KEK file holds 32 random bytes as base64 on one line, mode 0600, outside the database.
Each value is sealed with a fresh 96-bit nonce; the associated data binds tenant, name and
version, so a ciphertext copied to another row (or tenant) fails to open. A sealed value is
`nonce || ciphertext+tag`, stored beside the id of the KEK that sealed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stellaorch.domain.secrets import SecretCorrupt, SecretKeyInvalid

KEY_FILE = "secrets.kek"
NEXT_SUFFIX = ".next"  # a rotation in progress: the new key, until every row is re-sealed
KEY_BYTES = 32
NONCE_BYTES = 12


def associated_data(tenant: str, name: str, version: int) -> bytes:
    """What a ciphertext is bound to: its tenant, secret name and version."""
    return f"stella-secret/v1\x00{tenant}\x00{name}\x00{version}".encode()


def key_id(key: bytes) -> str:
    """A short public fingerprint of a KEK (never the key itself)."""
    return hashlib.sha256(b"stella-kek/v1" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    """A sealed value and the id of the KEK that sealed it."""

    blob: bytes
    kek_id: str


@dataclass
class Keyring:
    """The KEK file (created on first use) and, during a rotation, the next key beside it."""

    path: Path
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    _current: str | None = None

    def check(self) -> None:
        """Refuse a key file (or a pending next key) looser than 0600, unreadable or mis-sized."""
        for candidate in (self.path, next_path(self.path)):
            if candidate.exists():
                read_key_file(candidate)

    def seal(self, plaintext: bytes, tenant: str, name: str, version: int) -> Sealed:
        """Encrypt a value for (tenant, name, version) under the current KEK."""
        kid = self._load(create=True)
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = associated_data(tenant, name, version)
        blob = nonce + AESGCM(self._keys[kid]).encrypt(nonce, plaintext, aad)
        return Sealed(blob, kid)

    def open(self, sealed: Sealed, tenant: str, name: str, version: int) -> bytes:
        """Decrypt a value; SecretCorrupt (naming the secret, never bytes of it) on failure."""
        self._load(create=False)
        if sealed.kek_id not in self._keys:
            self.reload()  # the key was rotated by another process since we read the file
            self._load(create=False)
        key = self._keys.get(sealed.kek_id)
        where = f"secret {name!r} version {version}"
        if key is None:
            raise SecretCorrupt(f"{where} was sealed under key {sealed.kek_id}, which is not here")
        nonce, body = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, associated_data(tenant, name, version))
        except (InvalidTag, ValueError):
            raise SecretCorrupt(f"{where} cannot be decrypted: the ciphertext is damaged") from None

    def reload(self) -> None:
        """Forget the keys read so far; the next use reads the key files again."""
        self._keys.clear()
        self._current = None

    @property
    def current_id(self) -> str:
        """The id of the KEK new values are sealed under (creating the key file if missing)."""
        return self._load(create=True)

    def _load(self, *, create: bool) -> str:
        """Read the key file (and a pending next key) once; the next key wins for sealing."""
        if self._current is not None:
            return self._current
        if not self.path.exists():
            if not create:
                return ""
            write_key_file(self.path, secrets.token_bytes(KEY_BYTES))
        current = self._add(read_key_file(self.path))
        pending = next_path(self.path)
        if pending.exists():
            current = self._add(read_key_file(pending))
        self._current = current
        return current

    def _add(self, key: bytes) -> str:
        kid = key_id(key)
        self._keys[kid] = key
        return kid


def next_path(path: Path) -> Path:
    """Where a rotation writes the new key before it replaces the current one."""
    return path.with_name(path.name + NEXT_SUFFIX)


def _check_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretKeyInvalid(
            f"the secrets key file {path} has mode {mode:04o}; it must be 0600 "
            f"(readable by its owner only): chmod 600 {path}"
        )


def read_key_file(path: Path) -> bytes:
    """The KEK in `path`, after checking its permissions and its size."""
    _check_mode(path)
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError, binascii.Error) as exc:
        raise SecretKeyInvalid(f"the secrets key file {path} cannot be read: {exc}") from None
    if len(key) != KEY_BYTES:
        raise SecretKeyInvalid(f"the secrets key file {path} must hold {KEY_BYTES} bytes")
    return key


def write_key_file(path: Path, key: bytes) -> None:
    """Create `path` with mode 0600 holding `key` (never overwrites an existing file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
