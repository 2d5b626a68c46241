"""Bundles over the API: import, list, tenant isolation, load, revocation, health, signed DAGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, assert_envelope, spec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from stellaorch.domain.errors import StepFailed  # noqa: E402
from stellaorch.domain.spec import parse_spec  # noqa: E402
from stellaorch.engine.bundle_format import Descriptor, build_bundle  # noqa: E402
from stellaorch.engine.bundle_reader import BundleLimits, sign_archive  # noqa: E402
from stellaorch.engine.dag_signing import sign_spec  # noqa: E402
from stellaorch.security.trust import TrustStore  # noqa: E402

A, B = "acme", "globex"
HELLO = Descriptor("hello", "1.0.0", "script", "run.sh")
ARCHIVE = {"Content-Type": "application/octet-stream"}


def archive(tmp_path: Path, key: Ed25519PrivateKey | None, text: str = "echo hi\n") -> bytes:
    """A bundle of one executable script, signed with `key` unless None."""
    source = tmp_path / f"src-{abs(hash((text, id(key))))}"
    source.mkdir(parents=True, exist_ok=True)
    (source / "run.sh").write_text(text)
    (source / "run.sh").chmod(0o755)
    data = build_bundle(source, HELLO)
    return data if key is None else sign_archive(data, key, BundleLimits())


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The signing key the server trusts."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def bapi(make_api: MakeApi, key: Ed25519PrivateKey, tmp_path: Path) -> Api:
    """An API whose trust store holds `key`."""
    TrustStore(tmp_path / "trust").add_public(key.public_key())
    return await make_api(
        trust_dir=tmp_path / "trust",
        bundles_dir=tmp_path / "bundles",
        bundle_cache_dir=tmp_path / "cache",  # no step runs here: the sandbox needn't enter it
    )


async def post_bundle(api: Api, tenant: str, data: bytes, **kw: Any) -> Any:
    """POST /bundles with the archive as body."""
    headers = {**api.headers(tenant, **kw), **ARCHIVE}
    return await api.client.post(f"{BASE}/bundles", content=data, headers=headers)


async def test_import_stores_a_verified_bundle_content_addressed(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    data = archive(tmp_path, key)
    response = await post_bundle(bapi, A, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "hello" and body["version"] == "1.0.0"
    assert body["digest"].startswith("sha256:") and body["signedBy"]
    stored = tmp_path / "bundles" / "archives" / (body["digest"][7:] + ".stella.bundle.tgz")
    assert stored.read_bytes() == data
    again = await post_bundle(bapi, A, data)
    assert again.status_code == 200 and again.json()["digest"] == body["digest"]
    listed = await bapi.get_json(A, "/bundles")
    assert [i["digest"] for i in listed["items"]] == [body["digest"]]
    shown = await bapi.get_json(A, "/bundles/hello/1.0.0")
    assert shown["manifest"]["plugin"] == {"type": "script", "entrypoint": "run.sh"}


async def test_other_content_under_the_same_version_is_a_conflict(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    assert (await post_bundle(bapi, A, archive(tmp_path, key))).status_code == 201
    response = await post_bundle(bapi, A, archive(tmp_path, key, "echo other\n"))
    assert response.status_code == 409
    assert assert_envelope(response)["code"] == "BUNDLE_VERSION_CONFLICT"


@pytest.mark.parametrize(
    ("signer", "code"), [("none", "SIGNATURE_REQUIRED"), ("stranger", "SIGNER_NOT_TRUSTED")]
)
async def test_unsigned_or_untrusted_bundles_are_refused(
    bapi: Api, tmp_path: Path, signer: str, code: str
) -> None:
    key = None if signer == "none" else Ed25519PrivateKey.generate()
    response = await post_bundle(bapi, A, archive(tmp_path, key))
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == code


async def test_one_changed_byte_is_refused_at_import(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    data = bytearray(archive(tmp_path, key))
    data[len(data) // 2] ^= 0x01
    response = await post_bundle(bapi, A, bytes(data))
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "BUNDLE_INVALID"


async def test_an_oversize_body_is_413_with_the_envelope(make_api: MakeApi) -> None:
    api = await make_api(bundle_max_bytes=4096)
    response = await post_bundle(api, A, b"\0" * 10_000)
    assert response.status_code == 413
    assert assert_envelope(response)["code"] == "BODY_TOO_LARGE"


async def test_import_needs_the_admin_scope_and_a_reason(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    data = archive(tmp_path, key)
    reader = await post_bundle(bapi, A, data, scopes=("orchestrator:read",))
    assert reader.status_code == 403 and assert_envelope(reader)["code"] == "SCOPE_REQUIRED"
    unexplained = await post_bundle(bapi, A, data, reason=None)
    assert unexplained.status_code == 400


async def test_a_tenant_never_sees_or_loads_another_tenants_bundle(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    assert (await post_bundle(bapi, A, archive(tmp_path, key))).status_code == 201
    assert (await bapi.get_json(B, "/bundles"))["items"] == []
    response = await bapi.client.get(f"{BASE}/bundles/hello/1.0.0", headers=bapi.headers(B))
    assert response.status_code == 404
    assert assert_envelope(response)["code"] == "BUNDLE_NOT_FOUND"
    store = bapi.orchestrator.bundles
    assert store.find(B, "hello", "1.0.0") is None
    assert store.find(A, "hello", "1.0.0") is not None
    db = bapi.orchestrator.env.db
    assert await db.read(lambda conn: store.find_in(conn, B, "hello", "1.0.0")) is None
    found = await db.read(lambda conn: store.find_in(conn, A, "hello", "1.0.0"))
    assert found is not None and found.digest.startswith("sha256:")
    with pytest.raises(StepFailed) as caught:
        await store.load(B, "hello", "1.0.0")
    assert caught.value.code == "BUNDLE_NOT_FOUND"
    health = await bapi.get_json(B, "/admin/health")
    assert health["bundles"]["count"] == 0


async def test_load_unpacks_once_and_reuses_the_verified_directory(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    await post_bundle(bapi, A, archive(tmp_path, key))
    store = bapi.orchestrator.bundles
    first = await store.load(A, "hello", "1.0.0")
    assert (first.root / "run.sh").read_text() == "echo hi\n"
    assert first.root.name == first.digest.removeprefix("sha256:")
    assert first.root.parent.name.startswith("stella-bundles-")  # this process's own cache
    assert first.root.is_relative_to(tmp_path / "cache")
    assert first.identity.as_json()["kind"] == "bundle" and first.signed_by
    archive_file = tmp_path / "bundles" / "archives" / (first.digest[7:] + ".stella.bundle.tgz")
    archive_file.write_bytes(b"tampered after the first load")
    second = await store.load(A, "hello", "1.0.0")  # verified once per digest: reused
    assert second.root == first.root
    report = await bapi.client.post(f"{BASE}/bundles:verify", headers=bapi.headers(A))
    assert report.json()["failures"] == 1  # a fresh check re-reads the archive


async def test_a_tampered_archive_on_disk_never_loads(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    digest = (await post_bundle(bapi, A, archive(tmp_path, key))).json()["digest"]
    stored = tmp_path / "bundles" / "archives" / (digest[7:] + ".stella.bundle.tgz")
    data = bytearray(stored.read_bytes())
    data[-30] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(StepFailed) as caught:
        await bapi.orchestrator.bundles.load(A, "hello", "1.0.0")
    assert caught.value.code == "BUNDLE_UNVERIFIED" and not caught.value.retryable
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []


async def test_a_revoked_key_makes_its_bundles_stop_loading_and_health_says_so(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    body = (await post_bundle(bapi, A, archive(tmp_path, key))).json()
    store = bapi.orchestrator.bundles
    await store.load(A, "hello", "1.0.0")
    assert (await bapi.get_json(A, "/admin/health"))["bundles"]["verified"] == 1
    TrustStore(tmp_path / "trust").remove(body["signedBy"])
    with pytest.raises(StepFailed) as caught:
        await store.load(A, "hello", "1.0.0")
    assert caught.value.code == "BUNDLE_REVOKED"
    assert store.find(A, "hello", "1.0.0") is None
    health = await bapi.get_json(A, "/admin/health")
    assert health["bundles"]["status"] == "failed" and health["status"] == "degraded"
    assert health["bundles"]["failures"][0]["error"]["code"] == "SIGNER_NOT_TRUSTED"
    again = await post_bundle(bapi, A, archive(tmp_path, key, "echo new\n"))
    assert assert_envelope(again)["code"] == "SIGNER_NOT_TRUSTED"


# --- signed DAG versions -----------------------------------------------------------------------
DAG = spec("signed", [{"id": "a", "plugin": "noop"}])


async def post_dag(api: Api, document: dict[str, Any]) -> Any:
    """POST /dags as an admin of A."""
    return await api.client.post(f"{BASE}/dags", json=document, headers=api.headers(A))


async def test_a_signed_dag_records_its_signer(bapi: Api, key: Ed25519PrivateKey) -> None:
    signature = sign_spec(parse_spec(DAG), key)
    response = await post_dag(bapi, {**DAG, "signature": signature})
    assert response.status_code == 201, response.text
    signer = response.json()["signedBy"]
    assert signer == signature["signatures"][0]["keyid"]
    listed = await bapi.get_json(A, "/dags")
    assert listed["items"][0]["signedBy"] == signer
    assert (await bapi.get_json(A, "/dags/signed/1"))["signedBy"] == signer


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda s: {**s, "signatures": [{**s["signatures"][0], "sig": "AAAA"}]},
         "SIGNATURE_INVALID"),
        (lambda s: {**s, "payload": "e30="}, "SIGNATURE_INVALID"),
        (lambda s: "not an envelope", "SIGNATURE_INVALID"),
    ],
)  # fmt: skip
async def test_a_bad_dag_signature_is_400_with_the_envelope(
    bapi: Api, key: Ed25519PrivateKey, mutate: Any, code: str
) -> None:
    signature = mutate(sign_spec(parse_spec(DAG), key))
    response = await post_dag(bapi, {**DAG, "signature": signature})
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == code


async def test_a_dag_signed_by_an_untrusted_key_is_refused(bapi: Api) -> None:
    signature = sign_spec(parse_spec(DAG), Ed25519PrivateKey.generate())
    response = await post_dag(bapi, {**DAG, "signature": signature})
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "SIGNER_NOT_TRUSTED"


async def test_a_server_that_requires_signatures_refuses_unsigned_dags(
    make_api: MakeApi, tmp_path: Path
) -> None:
    api = await make_api(require_dag_signatures=True, trust_dir=tmp_path / "trust")
    response = await post_dag(api, DAG)
    assert response.status_code == 400
    assert assert_envelope(response)["code"] == "SIGNATURE_REQUIRED"


async def test_without_the_requirement_unsigned_dags_publish_unsigned(bapi: Api) -> None:
    response = await post_dag(bapi, DAG)
    assert response.status_code == 201 and response.json()["signedBy"] is None


async def test_revoking_a_key_stops_the_dag_versions_it_signed_from_running(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    published = await post_dag(bapi, {**DAG, "signature": sign_spec(parse_spec(DAG), key)})
    assert published.status_code == 201
    kid = published.json()["signedBy"]
    queued = await bapi.start(A, "signed")  # no worker yet: it waits in the queue
    TrustStore(tmp_path / "trust").remove(kid)

    refused = await bapi.client.post(
        f"{BASE}/runs", json={"dagId": "signed", "inputs": {}}, headers=bapi.headers(A)
    )
    assert refused.status_code == 400
    body = assert_envelope(refused)
    assert body["code"] == "SIGNER_NOT_TRUSTED" and kid in body["message"]

    bapi.start_worker()  # the queued run's attempt does not load the version either
    assert await bapi.wait(A, queued["runId"]) == "failed"
    run = await bapi.get_json(A, f"/runs/{queued['runId']}")
    step = run["steps"][0]
    assert step["error"]["code"] == "SIGNER_NOT_TRUSTED" and step["error"]["retryable"] is False

    TrustStore(tmp_path / "trust").add_public(key.public_key())  # trusted again: runs again
    again = await bapi.start(A, "signed")
    assert await bapi.wait(A, again["runId"]) == "completed"


async def test_warm_re_verifies_bundles_and_drops_one_tampered_on_disk(
    bapi: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    body = (await post_bundle(bapi, A, archive(tmp_path, key))).json()
    store = bapi.orchestrator.bundles
    await store.load(A, "hello", "1.0.0")
    warmed = (await bapi.client.post(f"{BASE}/admin/warm", headers=bapi.headers(A))).json()
    assert warmed["workers"][0]["warmed"]["bundles"] == {"bundles": 1, "verified": 1, "failed": 0}

    path = store._archive_path(body["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    warmed = (await bapi.client.post(f"{BASE}/admin/warm", headers=bapi.headers(A))).json()
    assert warmed["workers"][0]["warmed"]["bundles"] == {"bundles": 1, "verified": 0, "failed": 1}
    with pytest.raises(StepFailed) as caught:
        await store.load(A, "hello", "1.0.0")  # no longer served from the cache
    assert caught.value.code == "BUNDLE_UNVERIFIED"
