"""DSSE envelopes signed with Ed25519: PAE, sign, verify (github.com/secure-systems-lab/dsse).

The envelope is `{"payloadType", "payload" (base64), "signatures": [{"keyid", "sig"}]}`; what
is signed is PAE(payloadType, payload), never the payload alone, so a signature made for one
payload type can never be replayed as another.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stellaorch.domain.errors import SignatureInvalid, SignerNotTrusted
from stellaorch.security.trust import key_id

MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope: the payload bytes and (keyid, signature bytes) pairs."""

    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def to_json(self) -> dict[str, Any]:
        """The envelope as JSON (base64 with padding, as the DSSE spec writes it)."""
        return {
            "payloadType": self.payload_type,
            "payload": _b64(self.payload),
            "signatures": [{"keyid": k, "sig": _b64(s)} for k, s in self.signatures],
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise SignatureInvalid(f"envelope {what} must be a base64 string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(f"envelope {what} is not valid base64") from None


def parse_envelope(document: object) -> Envelope:
    """An envelope from its JSON; SignatureInvalid names the first malformed field."""
    if not isinstance(document, Mapping):
        raise SignatureInvalid("the signature must be a DSSE envelope (a JSON object)")
    payload_type = document.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise SignatureInvalid("envelope payloadType must be a non-empty string")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not 0 < len(signatures) <= MAX_SIGNATURES:
        raise SignatureInvalid(f"envelope signatures must be a list of 1 to {MAX_SIGNATURES}")
    pairs = []
    for i, item in enumerate(signatures):
        if not isinstance(item, Mapping) or not isinstance(item.get("keyid", ""), str):
            raise SignatureInvalid(f"envelope signatures[{i}] must have a string keyid and sig")
        pairs.append((str(item.get("keyid", "")), _unb64(item.get("sig"), f"signatures[{i}].sig")))
    payload = _unb64(document.get("payload"), "payload")
    return Envelope(payload_type, payload, tuple(pairs))


def sign(payload_type: str, payload: bytes, key: Ed25519PrivateKey) -> Envelope:
    """An envelope over `payload` with one Ed25519 signature; keyid is the key's trust id."""
    signature = key.sign(pae(payload_type, payload))
    return Envelope(payload_type, payload, ((key_id(key.public_key()), signature),))


def verify(envelope: Envelope, payload_type: str, trusted: Mapping[str, Ed25519PublicKey]) -> str:
    """The keyid of the first signature made by a trusted key that verifies; else raise.

    SignatureInvalid: wrong payload type, or a trusted key's signature that does not verify;
    SignerNotTrusted: no signature is by a key in the trust store (unknown or revoked).
    """
    if envelope.payload_type != payload_type:
        raise SignatureInvalid(
            f"envelope payloadType is {envelope.payload_type!r}, expected {payload_type!r}"
        )
    message = pae(envelope.payload_type, envelope.payload)
    known = [(kid, sig) for kid, sig in envelope.signatures if kid in trusted]
    for kid, sig in known:
        try:
            trusted[kid].verify(sig, message)
        except InvalidSignature:
            continue
        return kid
    if known:
        raise SignatureInvalid(f"the signature by key {known[0][0]} does not verify")
    names = ", ".join(kid or "(no keyid)" for kid, _ in envelope.signatures)
    raise SignerNotTrusted(f"no signature is by a trusted key (signed by: {names})")
