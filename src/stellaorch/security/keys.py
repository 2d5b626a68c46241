"""Signing keys for local tokens: generate Ed25519 keys, publish them as a JWKS, load them.

Everything is read from a local directory: there is no discovery endpoint and no fetch.
A directory holds `jwks.json` (public keys, Ed25519 or RSA) and, for keys made here,
`<kid>.private.pem` (mode 0600) used by `stella orch token issue`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from stellaorch.domain.errors import ValidationError
from stellaorch.security.trust import load_private_key

JWKS_FILE = "jwks.json"
PublicKey = Ed25519PublicKey | RSAPublicKey
PrivateKey = Ed25519PrivateKey | RSAPrivateKey


@dataclass(frozen=True)
class VerificationKey:
    """A public key with the one algorithm it may verify."""

    kid: str
    algorithm: str  # "EdDSA" or "RS256"
    key: PublicKey


def generate_key(directory: Path) -> str:
    """Create an Ed25519 key pair in `directory`, add it to the JWKS; returns its kid."""
    directory.mkdir(parents=True, exist_ok=True)
    kid = "ed25519-" + secrets.token_hex(4)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = directory / f"{kid}.private.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    _write_jwks(directory, [*_read_jwks(directory), jwk])
    return kid


def _read_jwks(directory: Path) -> list[dict[str, Any]]:
    path = directory / JWKS_FILE
    if not path.exists():
        return []
    try:
        keys = json.loads(path.read_text()).get("keys", [])
    except ValueError as exc:
        raise ValidationError(f"{path} is not a JSON Web Key Set: {exc}") from exc
    return [k for k in keys if isinstance(k, dict)]


def _write_jwks(directory: Path, keys: list[dict[str, Any]]) -> None:
    tmp = directory / (JWKS_FILE + ".tmp")
    tmp.write_text(json.dumps({"keys": keys}, indent=2, sort_keys=True) + "\n")
    tmp.replace(directory / JWKS_FILE)  # atomic: a reader never sees half a file


def _verification_key(jwk: dict[str, Any]) -> VerificationKey | None:
    kid = str(jwk.get("kid", ""))
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        key = OKPAlgorithm.from_jwk(jwk)
        if isinstance(key, Ed25519PublicKey):
            return VerificationKey(kid, "EdDSA", key)
    if jwk.get("kty") == "RSA":
        rsa = RSAAlgorithm.from_jwk(jwk)
        if isinstance(rsa, RSAPublicKey):
            return VerificationKey(kid, "RS256", rsa)
    return None


def _pem_keys(directory: Path) -> list[VerificationKey]:
    """Public keys given as `<kid>.public.pem` files (RSA or Ed25519)."""
    found = []
    for path in sorted(directory.glob("*.public.pem")):
        key = serialization.load_pem_public_key(path.read_bytes())
        kid = path.name.removesuffix(".public.pem")
        if isinstance(key, Ed25519PublicKey):
            found.append(VerificationKey(kid, "EdDSA", key))
        elif isinstance(key, RSAPublicKey):
            found.append(VerificationKey(kid, "RS256", key))
    return found


def load_verification_keys(directory: Path) -> dict[str, VerificationKey]:
    """Every public key of the directory, by kid (JWKS entries and *.public.pem files)."""
    if not directory.is_dir():
        return {}
    keys = [k for k in (_verification_key(j) for j in _read_jwks(directory)) if k]
    return {k.kid: k for k in [*keys, *_pem_keys(directory)]}


def load_signing_key(directory: Path, kid: str | None = None) -> tuple[str, PrivateKey]:
    """A private key made by `generate_key` (the newest, unless `kid` names one)."""
    candidates = sorted(directory.glob("*.private.pem"), key=lambda p: p.stat().st_mtime)
    if kid is not None:
        candidates = [p for p in candidates if p.name == f"{kid}.private.pem"]
    if not candidates:
        raise ValidationError(f"no signing key in {directory}; run `stella orch keys generate`")
    path = candidates[-1]
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey | RSAPrivateKey):
        raise ValidationError(f"{path} is neither an Ed25519 nor an RSA private key")
    return path.name.removesuffix(".private.pem"), key


def newest_ed25519_key(directory: Path) -> Ed25519PrivateKey | None:
    """The newest Ed25519 `*.private.pem` of the directory (RSA token keys are skipped)."""
    candidates = sorted(directory.glob("*.private.pem"), key=lambda p: p.stat().st_mtime)
    for path in reversed(candidates):
        try:
            return load_private_key(path)
        except ValidationError:
            continue  # an RSA token key: it cannot sign DSSE envelopes here
    return None
