"""Authentication, tenant and scope checks, operator reasons and the audit log (SPEC §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import ADMIN, BASE, READ, WRITE, Api, MakeApi, assert_envelope, spec  # noqa: E402

from stellaorch.security.keys import load_signing_key  # noqa: E402

TENANT = "acme"


# -- token forgery ------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    encode = json.dumps
    return f"{_b64(encode(header).encode())}.{_b64(encode(claims).encode())}"


def claims(audience: str = "stella-orchestrator", **overrides: Any) -> dict[str, Any]:
    """Claims of a token that would be accepted, but for `overrides`."""
    now = int(time.time())
    base = {
        "sub": "mallory",
        "aud": audience,
        "iat": now,
        "exp": now + 600,
        "scope": ADMIN,
        "tenants": [TENANT],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(keys_dir: Path, body: dict[str, Any]) -> str:
    """A token signed by the server's own trusted key, whatever the claims' shape."""
    kid, key = load_signing_key(keys_dir)
    # jwt.encode refuses some malformed claims itself; sign the raw payload instead
    payload = json.dumps(body).encode()
    return jwt.api_jws.encode(payload, key, algorithm="EdDSA", headers={"kid": kid})


def expired(keys_dir: Path) -> str:
    past = int(time.time()) - 3600
    return signed(keys_dir, claims(iat=past - 600, exp=past))


def forged_with_trusted_kid(keys_dir: Path) -> str:
    kid, _ = load_signing_key(keys_dir)
    return jwt.encode(
        claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )


def forged_with_unknown_kid(keys_dir: Path) -> str:
    key = Ed25519PrivateKey.generate()
    return jwt.encode(claims(), key, algorithm="EdDSA", headers={"kid": "ed25519-unknown"})


def forged_without_kid(keys_dir: Path) -> str:
    return jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA")


def alg_none(keys_dir: Path) -> str:
    return _segments({"alg": "none", "typ": "JWT"}, claims()) + "."


def hs256_with_public_key(keys_dir: Path) -> str:
    kid, key = load_signing_key(keys_dir)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = _segments({"alg": "HS256", "typ": "JWT", "kid": kid}, claims())
    signature = hmac.new(public, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{_b64(signature)}"


def wrong_audience(keys_dir: Path) -> str:
    return signed(keys_dir, claims(audience="another-service"))


def without_expiry(keys_dir: Path) -> str:
    return signed(keys_dir, claims(exp=None))


def tampered_claims(keys_dir: Path) -> str:
    header, _, signature = signed(keys_dir, claims(tenants=["other"])).split(".")
    return f"{header}.{_segments({}, claims()).split('.')[1]}.{signature}"


def garbage(keys_dir: Path) -> str:
    return "not-a-jwt"


# -- signed by the trusted key, but with claims of the wrong shape -------------------------
def scope_number(keys_dir: Path) -> str:
    return signed(keys_dir, claims(scope=7))


def scope_boolean(keys_dir: Path) -> str:
    return signed(keys_dir, claims(scope=True))


def scope_dict_naming_admin(keys_dir: Path) -> str:
    # iterating the dict would grant its keys, though the value says "no"
    return signed(keys_dir, claims(scope={ADMIN: False}))


def scope_list_with_number(keys_dir: Path) -> str:
    return signed(keys_dir, claims(scope=[ADMIN, 3]))


def exp_string(keys_dir: Path) -> str:
    return signed(keys_dir, claims(exp=str(int(time.time()) + 600)))


def exp_boolean(keys_dir: Path) -> str:
    return signed(keys_dir, claims(exp=True))


def iat_string(keys_dir: Path) -> str:
    return signed(keys_dir, claims(iat=str(int(time.time()))))


def iat_boolean(keys_dir: Path) -> str:
    return signed(keys_dir, claims(iat=False))


def iat_missing(keys_dir: Path) -> str:
    # without iat the lifetime cannot be checked
    return signed(keys_dir, claims(iat=None))


def nbf_string(keys_dir: Path) -> str:
    return signed(keys_dir, claims(nbf=str(int(time.time()) - 10)))


def sub_empty(keys_dir: Path) -> str:
    return signed(keys_dir, claims(sub=""))


def sub_blank(keys_dir: Path) -> str:
    return signed(keys_dir, claims(sub="   "))


def sub_too_long(keys_dir: Path) -> str:
    return signed(keys_dir, claims(sub="m" * 201))


def tenants_dict(keys_dir: Path) -> str:
    return signed(keys_dir, claims(tenants={TENANT: True}))


def tenants_with_number(keys_dir: Path) -> str:
    return signed(keys_dir, claims(tenants=[TENANT, 42]))


def lifetime_over_default_cap(keys_dir: Path) -> str:
    now = int(time.time())
    return signed(keys_dir, claims(iat=now, exp=now + 31 * 86400))


BAD_TOKENS: list[Callable[[Path], str]] = [
    expired,
    forged_with_trusted_kid,
    forged_with_unknown_kid,
    forged_without_kid,
    alg_none,
    hs256_with_public_key,
    wrong_audience,
    without_expiry,
    tampered_claims,
    garbage,
    scope_number,
    scope_boolean,
    scope_dict_naming_admin,
    scope_list_with_number,
    exp_string,
    exp_boolean,
    iat_string,
    iat_boolean,
    iat_missing,
    nbf_string,
    sub_empty,
    sub_blank,
    sub_too_long,
    tenants_dict,
    tenants_with_number,
    lifetime_over_default_cap,
]


def assert_unauthenticated(response: Any) -> None:
    """401 UNAUTHENTICATED with a Bearer challenge."""
    assert response.status_code == 401, response.text
    assert assert_envelope(response)["code"] == "UNAUTHENTICATED"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def assert_forbidden(response: Any, code: str) -> None:
    """403 with the given code."""
    assert response.status_code == 403, response.text
    assert assert_envelope(response)["code"] == code


# -- authentication -----------------------------------------------------------------------
async def test_missing_token_is_401_with_bearer_challenge(api: Api) -> None:
    response = await api.client.get(f"{BASE}/runs", headers={"X-Stella-Tenant": TENANT})
    assert_unauthenticated(response)


async def test_non_bearer_authorization_is_401(api: Api) -> None:
    headers = {"Authorization": "Basic YWxpY2U6c2VjcmV0", "X-Stella-Tenant": TENANT}
    assert_unauthenticated(await api.client.get(f"{BASE}/runs", headers=headers))


@pytest.mark.parametrize("make_token", BAD_TOKENS, ids=lambda f: f.__name__)
async def test_bad_token_is_401(api: Api, make_token: Callable[[Path], str]) -> None:
    headers = {"Authorization": f"Bearer {make_token(api.keys_dir)}", "X-Stella-Tenant": TENANT}
    assert_unauthenticated(await api.client.get(f"{BASE}/runs", headers=headers))


async def test_bad_token_is_401_even_without_tenant(api: Api) -> None:
    headers = {"Authorization": f"Bearer {expired(api.keys_dir)}"}
    assert_unauthenticated(await api.client.get(f"{BASE}/runs", headers=headers))


async def test_valid_token_is_accepted(api: Api) -> None:
    headers = {
        "Authorization": f"Bearer {signed(api.keys_dir, claims())}",
        "X-Stella-Tenant": TENANT,
    }
    assert (await api.client.get(f"{BASE}/runs", headers=headers)).status_code == 200


def bearer(token: str) -> dict[str, str]:
    """Authorization and tenant headers for a raw token."""
    return {"Authorization": f"Bearer {token}", "X-Stella-Tenant": TENANT}


async def test_scope_as_list_of_strings_is_accepted(api: Api) -> None:
    token = signed(api.keys_dir, claims(scope=[READ]))
    assert (await api.client.get(f"{BASE}/runs", headers=bearer(token))).status_code == 200


async def test_longest_subject_is_accepted_and_audited(api: Api) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    headers = api.headers(TENANT, subject="m" * 200)
    response = await api.client.post(f"{BASE}/dags/d/1:disable", headers=headers)
    assert response.status_code == 200, response.text
    rows = await api.sql("SELECT actor FROM audit_log WHERE action = 'dag.disable'")
    assert rows == [{"actor": "m" * 200}]


async def test_token_outliving_configured_lifetime_is_401(make_api: MakeApi) -> None:
    api = await make_api(token_max_lifetime_seconds=3600)
    now = int(time.time())
    token = signed(api.keys_dir, claims(iat=now, exp=now + 3601))
    assert_unauthenticated(await api.client.get(f"{BASE}/runs", headers=bearer(token)))


async def test_token_within_configured_lifetime_is_accepted(make_api: MakeApi) -> None:
    api = await make_api(token_max_lifetime_seconds=3600)
    now = int(time.time())
    token = signed(api.keys_dir, claims(iat=now, exp=now + 3600))
    assert (await api.client.get(f"{BASE}/runs", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("iss", [None, "https://other.example", 7])
async def test_token_not_from_configured_issuer_is_401(make_api: MakeApi, iss: Any) -> None:
    api = await make_api(token_issuer="https://idp.example")
    token = signed(api.keys_dir, claims(iss=iss))
    assert_unauthenticated(await api.client.get(f"{BASE}/runs", headers=bearer(token)))


async def test_token_from_configured_issuer_is_accepted(make_api: MakeApi) -> None:
    api = await make_api(token_issuer="https://idp.example")
    token = signed(api.keys_dir, claims(iss="https://idp.example"))
    assert (await api.client.get(f"{BASE}/runs", headers=bearer(token))).status_code == 200


async def test_issuer_is_not_checked_when_none_is_configured(api: Api) -> None:
    token = signed(api.keys_dir, claims(iss="https://anyone.example"))
    assert (await api.client.get(f"{BASE}/runs", headers=bearer(token))).status_code == 200


# -- tenants ------------------------------------------------------------------------------
async def test_token_without_tenants_may_act_for_no_tenant(api: Api) -> None:
    # A correctly signed token that names no tenant authenticates but authorises nothing.
    token = signed(api.keys_dir, claims(tenants=None))
    headers = {"Authorization": f"Bearer {token}", "X-Stella-Tenant": TENANT}
    assert_forbidden(await api.client.get(f"{BASE}/runs", headers=headers), "TENANT_FORBIDDEN")


async def test_missing_tenant_header_is_tenant_required(api: Api) -> None:
    response = await api.client.get(f"{BASE}/runs", headers=api.headers(None))
    assert_forbidden(response, "TENANT_REQUIRED")


async def test_tenant_not_named_in_token_is_forbidden(api: Api) -> None:
    response = await api.client.get(
        f"{BASE}/runs", headers=api.headers("globex", token_tenants=[TENANT])
    )
    assert_forbidden(response, "TENANT_FORBIDDEN")


@pytest.mark.parametrize("tenant", ["../acme", "ACME", "acme/..", "a b", "%2e%2e"])
async def test_malformed_tenant_header_is_forbidden(api: Api, tenant: str) -> None:
    response = await api.client.get(
        f"{BASE}/runs", headers=api.headers(tenant, token_tenants=["*"])
    )
    assert_forbidden(response, "TENANT_FORBIDDEN")


async def test_tenant_outside_server_allowlist_is_forbidden(make_api: MakeApi) -> None:
    api = await make_api(tenants=[TENANT])
    served = api.headers(TENANT, token_tenants=[TENANT, "globex"])
    not_served = api.headers("globex", token_tenants=[TENANT, "globex"])
    assert (await api.client.get(f"{BASE}/runs", headers=served)).status_code == 200
    assert_forbidden(await api.client.get(f"{BASE}/runs", headers=not_served), "TENANT_FORBIDDEN")


async def test_wildcard_token_still_respects_server_allowlist(make_api: MakeApi) -> None:
    api = await make_api(tenants=[TENANT])
    headers = api.headers("globex", token_tenants=["*"])
    assert_forbidden(await api.client.get(f"{BASE}/runs", headers=headers), "TENANT_FORBIDDEN")


# -- scopes -------------------------------------------------------------------------------
async def test_read_only_token_cannot_start_a_run(api: Api) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    reader = api.headers(TENANT, scopes=[READ])
    response = await api.client.post(f"{BASE}/runs", json={"dagId": "d"}, headers=reader)
    assert_forbidden(response, "SCOPE_REQUIRED")
    assert (await api.client.get(f"{BASE}/runs", headers=reader)).json()["items"] == []


async def test_write_token_cannot_publish_or_disable(api: Api) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    writer = api.headers(TENANT, scopes=[WRITE])
    document = spec("e", [{"id": "a", "plugin": "noop"}])
    assert_forbidden(
        await api.client.post(f"{BASE}/dags", json=document, headers=writer), "SCOPE_REQUIRED"
    )
    assert_forbidden(
        await api.client.post(f"{BASE}/dags/d/1:disable", headers=writer), "SCOPE_REQUIRED"
    )


async def test_metrics_need_admin_but_health_needs_read(api: Api) -> None:
    reader = api.headers(TENANT, scopes=[READ])
    assert (await api.client.get(f"{BASE}/admin/health", headers=reader)).status_code == 200
    for path in (f"{BASE}/admin/metrics", "/metrics"):
        assert_forbidden(await api.client.get(path, headers=reader), "SCOPE_REQUIRED")


# -- operator reason and audit ------------------------------------------------------------
@pytest.mark.parametrize("reason", [None, "", "   "])
async def test_admin_mutation_without_reason_is_400(api: Api, reason: str | None) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    headers = api.headers(TENANT, reason=None)
    if reason is not None:
        headers["X-Stella-Operator-Reason"] = reason
    response = await api.client.post(f"{BASE}/dags/d/1:disable", headers=headers)
    assert response.status_code == 400, response.text
    assert assert_envelope(response)["code"] == "VALIDATION_FAILED"
    assert (await api.get_json(TENANT, "/dags/d/1"))["enabled"] is True


async def test_disable_is_audited_with_actor_reason_and_ticket(api: Api) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    headers = api.headers(TENANT, subject="oncall-bob", reason="bad release 1.4")
    headers["X-Stella-Operator-Ticket"] = "OPS-4242"
    response = await api.client.post(f"{BASE}/dags/d/1:disable", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is False
    rows = await api.sql(
        "SELECT tenant, actor, action, target, reason, ticket FROM audit_log "
        "WHERE action = 'dag.disable'"
    )
    assert rows == [
        {
            "tenant": TENANT,
            "actor": "oncall-bob",
            "action": "dag.disable",
            "target": "d@1",
            "reason": "bad release 1.4",
            "ticket": "OPS-4242",
        }
    ]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Stella-Operator-Reason", "r" * 10 * 1024),
        ("X-Stella-Operator-Reason", "r" * 1025),
        ("X-Stella-Operator-Ticket", "T" * 129),
    ],
    ids=["reason-10KiB", "reason-1025", "ticket-129"],
)
async def test_overlong_operator_header_is_400_and_nothing_is_stored(
    api: Api, header: str, value: str
) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    headers = {**api.headers(TENANT), header: value}
    response = await api.client.post(f"{BASE}/dags/d/1:disable", headers=headers)
    assert response.status_code == 400, response.text
    error = assert_envelope(response)
    assert error["code"] == "HEADER_TOO_LONG"
    assert error["details"]["header"] == header
    assert (await api.get_json(TENANT, "/dags/d/1"))["enabled"] is True
    assert await api.sql("SELECT id FROM audit_log WHERE action = 'dag.disable'") == []


async def test_operator_headers_at_their_limits_are_audited(api: Api) -> None:
    await api.publish(TENANT, spec("d", [{"id": "a", "plugin": "noop"}]))
    headers = api.headers(TENANT, reason="r" * 1024)
    headers["X-Stella-Operator-Ticket"] = "T" * 128
    response = await api.client.post(f"{BASE}/dags/d/1:disable", headers=headers)
    assert response.status_code == 200, response.text
    rows = await api.sql("SELECT reason, ticket FROM audit_log WHERE action = 'dag.disable'")
    assert rows == [{"reason": "r" * 1024, "ticket": "T" * 128}]
