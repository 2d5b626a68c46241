"""DSSE (PAE vectors, sign, verify), the trust store and what DAG signatures cover."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stellaorch.domain.errors import (
    NotFound,
    SignatureInvalid,
    SignatureRequired,
    SignerNotTrusted,
    ValidationError,
)
from stellaorch.domain.spec import parse_spec
from stellaorch.engine.dag_signing import DAG_PAYLOAD_TYPE, sign_spec, verify_spec
from stellaorch.security import dsse
from stellaorch.security.trust import TrustStore, key_id
from stellaorch.service.parts import Role, with_role_defaults
from stellaorch.settings import Settings

SPEC = {"dagId": "d", "version": 1, "steps": [{"id": "a", "plugin": "noop"}]}


def test_pae_matches_the_dsse_specification_example() -> None:
    # protocol.md of the DSSE specification: PAE of its HelloWorld example
    encoded = dsse.pae("http://example.com/HelloWorld", b"hello world")
    assert encoded == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_pae_of_empty_type_and_body() -> None:
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "


def test_pae_counts_bytes_not_characters() -> None:
    assert dsse.pae("t\u00e9", b"\xff\x00") == b"DSSEv1 3 t\xc3\xa9 2 \xff\x00"


def _keys(key: Ed25519PrivateKey) -> dict[str, object]:
    return {key_id(key.public_key()): key.public_key()}


def test_signature_verifies_over_pae_with_the_trusted_key() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = dsse.sign("t", b"payload", key)
    key.public_key().verify(envelope.signatures[0][1], dsse.pae("t", b"payload"))
    parsed = dsse.parse_envelope(envelope.to_json())
    assert dsse.verify(parsed, "t", _keys(key)) == key_id(key.public_key())  # type: ignore[arg-type]


def test_a_changed_payload_does_not_verify() -> None:
    key = Ed25519PrivateKey.generate()
    document = dsse.sign("t", b"payload", key).to_json()
    document["payload"] = base64.b64encode(b"payloaD").decode()
    with pytest.raises(SignatureInvalid, match="does not verify"):
        dsse.verify(dsse.parse_envelope(document), "t", _keys(key))  # type: ignore[arg-type]


def test_another_payload_type_does_not_verify() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = dsse.sign("other", b"payload", key)
    with pytest.raises(SignatureInvalid, match="payloadType"):
        dsse.verify(envelope, "t", _keys(key))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "document",
    [None, [], {"payloadType": "t"}, {"payloadType": "t", "payload": "!!", "signatures": []},
     {"payloadType": "t", "payload": "eA==", "signatures": [{"keyid": "k", "sig": "%%"}]}],
)  # fmt: skip
def test_malformed_envelopes_are_refused(document: object) -> None:
    with pytest.raises(SignatureInvalid):
        dsse.parse_envelope(document)


def test_trust_store_adds_lists_and_removes_keys(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "signer.private.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    added = store.add_file(pem)
    assert len(added.key_id) == 16 and added.key_id == key_id(key.public_key())
    assert b"PRIVATE" not in (store.directory / f"{added.key_id}.pem").read_bytes()
    assert [k.key_id for k in store.list()] == [added.key_id]
    store.remove(added.key_id)
    assert store.keys() == {}
    with pytest.raises(NotFound):
        store.remove(added.key_id)


def test_trust_store_ignores_a_key_filed_under_another_id(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    trusted = store.add_public(Ed25519PrivateKey.generate().public_key())
    (tmp_path / f"{trusted.key_id}.pem").rename(tmp_path / "0123456789abcdef.pem")
    assert store.keys() == {}


def test_trust_store_refuses_a_file_that_is_not_an_ed25519_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(ValidationError, match="not a PEM key"):
        TrustStore(tmp_path / "t").add_file(tmp_path / "junk.pem")


def test_dag_signature_covers_the_canonical_spec() -> None:
    key = Ed25519PrivateKey.generate()
    spec = parse_spec(SPEC)
    envelope = sign_spec(spec, key)
    assert envelope["payloadType"] == DAG_PAYLOAD_TYPE
    signer = verify_spec(spec, envelope, _keys(key), required=True)  # type: ignore[arg-type]
    assert signer == key_id(key.public_key())
    other = parse_spec({**SPEC, "version": 2})
    with pytest.raises(SignatureInvalid, match="another document"):
        verify_spec(other, envelope, _keys(key), required=True)  # type: ignore[arg-type]


def test_a_revoked_dag_signer_is_not_trusted() -> None:
    spec = parse_spec(SPEC)
    envelope = sign_spec(spec, Ed25519PrivateKey.generate())
    with pytest.raises(SignerNotTrusted):
        verify_spec(spec, envelope, {}, required=False)


def test_an_unsigned_dag_passes_only_when_signatures_are_not_required() -> None:
    spec = parse_spec(SPEC)
    assert verify_spec(spec, None, {}, required=False) is None
    with pytest.raises(SignatureRequired):
        verify_spec(spec, None, {}, required=True)


def test_service_roles_require_dag_signatures_unless_told_otherwise() -> None:
    base = Settings()
    assert base.require_dag_signatures is None
    for role in (Role.SERVE, Role.API, Role.WORKER):
        assert with_role_defaults(base, role).require_dag_signatures is True
    assert (
        with_role_defaults(Settings(require_dag_signatures=False), Role.API).require_dag_signatures
        is False
    )
    assert with_role_defaults(base, Role.SCHEDULER).require_dag_signatures is None
