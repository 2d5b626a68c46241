"""Signed DAG versions: what a DAG signature covers, how it is made and checked.

The DSSE payload is the canonical JSON (UTF-8) of the spec document as the catalog stores it
(`DagSpec.to_document()`, no `signature` field), with payloadType `DAG_PAYLOAD_TYPE`. Any
other byte string, even an equivalent JSON text, is not a signature of the version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stellaorch.domain.canonical import canonical_json
from stellaorch.domain.errors import SignatureInvalid, SignatureRequired
from stellaorch.domain.spec import DagSpec
from stellaorch.security import dsse

DAG_PAYLOAD_TYPE = "application/vnd.stella.dag+json"


def dag_payload(spec: DagSpec) -> bytes:
    """The bytes a DAG signature covers: the canonical JSON of the spec document."""
    return canonical_json(spec.to_document()).encode("utf-8")


def sign_spec(spec: DagSpec, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope (as JSON) signing the version with `key`."""
    return dsse.sign(DAG_PAYLOAD_TYPE, dag_payload(spec), key).to_json()


def verify_spec(
    spec: DagSpec,
    envelope: object,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    required: bool,
) -> str | None:
    """The key id that signed `spec`; None when unsigned and not `required`; else raise."""
    if envelope is None:
        if required:
            raise SignatureRequired(
                "this server requires signed DAG versions: publish with --signature, or with "
                "a trusted private key at hand (`stella orch dag publish` signs with it)"
            )
        return None
    parsed = dsse.parse_envelope(envelope)
    if parsed.payload_type == DAG_PAYLOAD_TYPE and parsed.payload != dag_payload(spec):
        raise SignatureInvalid(
            f"the signature covers another document than DAG {spec.dag_id} version "
            f"{spec.version} (it signs the canonical JSON of the spec)"
        )
    return dsse.verify(parsed, DAG_PAYLOAD_TYPE, trusted)
