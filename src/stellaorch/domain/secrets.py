"""Secrets as the domain sees them: valid names, the errors of secret handling, and versions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from stellaorch.domain.errors import NotFound, StellaError, ValidationError

SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class SecretNotFound(NotFound):
    """A secret the caller named, or a step references, does not exist for the tenant."""

    code = "SECRET_NOT_FOUND"


class SecretInvalid(ValidationError):
    """A secret name or value that can never be stored (bad name, empty, too large)."""

    code = "SECRET_INVALID"


class SecretCorrupt(StellaError):
    """A stored ciphertext fails authentication: damaged, or sealed under another key."""

    code = "SECRET_CORRUPT"


class SecretKeyInvalid(StellaError):
    """The key-encryption key file is unusable (loose permissions, wrong size, unreadable)."""

    code = "SECRET_KEY_INVALID"


def check_secret_name(name: str) -> str:
    """`name` when it matches `[A-Za-z0-9_.-]{1,128}`; SecretInvalid otherwise (never echoed)."""
    if not SECRET_NAME.fullmatch(name):
        raise SecretInvalid("a secret name is 1 to 128 characters of A-Z a-z 0-9 _ . -")
    return name


def check_secret_value(value: bytes, max_bytes: int) -> bytes:
    """`value` when it is non-empty and at most `max_bytes`; the message names sizes only."""
    if not value:
        raise SecretInvalid("a secret value must not be empty")
    if len(value) > max_bytes:
        raise SecretInvalid(f"a secret value is at most {max_bytes} bytes, got {len(value)}")
    return value


@dataclass(frozen=True)
class ResolvedSecrets:
    """What one attempt resolved: the current value and version per name, and every live value.

    `values` and `live` hold plaintext, so both are kept out of repr.
    """

    versions: Mapping[str, int] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict, repr=False)
    live: tuple[str, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        """True when the attempt uses any secret."""
        return bool(self.versions)


NO_SECRETS = ResolvedSecrets()
