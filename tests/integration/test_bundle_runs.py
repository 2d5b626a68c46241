"""The supply chain over the API: a signed bundle imported, a DAG naming it, a sandboxed run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, MakeApi, spec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from stellaorch.engine.bundle_format import Descriptor, build_bundle  # noqa: E402
from stellaorch.engine.bundle_reader import BundleLimits, sign_archive  # noqa: E402
from stellaorch.security.trust import TrustStore  # noqa: E402

TENANT = "acme"
SCRIPT = '#!/bin/sh\nprintf \'{"greeting": "hello %s", "uid": %s}\\n\' "$1" "$(id -u)"\n'
ARCHIVE = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """The signing key the server trusts."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def api(make_api: MakeApi, key: Ed25519PrivateKey, tmp_path: Path) -> Api:
    """An API that trusts `key`; archives in tmp_path (0700), unpacked in the default cache."""
    TrustStore(tmp_path / "trust").add_public(key.public_key())
    return await make_api(trust_dir=tmp_path / "trust", bundles_dir=tmp_path / "bundles")


def hello_archive(tmp_path: Path, key: Ed25519PrivateKey, script: str = SCRIPT) -> bytes:
    """hello@1.0.0: one script printing its outputs, signed with `key`."""
    source = tmp_path / "hello"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "hello.sh").write_text(script)
    data = build_bundle(source, Descriptor("hello", "1.0.0", "script", "bin/hello.sh"))
    return sign_archive(data, key, BundleLimits())


async def import_bundle(api: Api, data: bytes) -> str:
    """POST /bundles; returns the stored bundle's digest."""
    response = await api.client.post(
        f"{BASE}/bundles", content=data, headers={**api.headers(TENANT), **ARCHIVE}
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["digest"])


async def test_a_step_runs_the_imported_bundle_in_the_sandbox_and_records_its_digest(
    api: Api, key: Ed25519PrivateKey, tmp_path: Path, require_sandbox: None
) -> None:
    digest = await import_bundle(api, hello_archive(tmp_path, key))
    step = {"id": "greet", "plugin": "hello@1.0.0", "with": {"args": ["${inputs.who}"]}}
    await api.publish(TENANT, spec("greeter", [step]))

    run = await api.start(TENANT, "greeter", {"who": "operator"})
    api.start_worker()
    status = await api.wait(TENANT, run["runId"], within=30)

    view = await api.get_json(TENANT, f"/runs/{run['runId']}")
    [greet] = view["steps"]
    assert status == "completed", greet["error"]
    assert greet["plugin"] == {
        "kind": "bundle",
        "name": "hello",
        "version": "1.0.0",
        "digest": digest,
    }
    outputs = await api.sql(
        "SELECT outputs_json FROM step_executions WHERE run_id = :r", r=run["runId"]
    )
    assert '"greeting":"hello operator"' in outputs[0]["outputs_json"]
    assert '"uid":0' not in outputs[0]["outputs_json"]  # never root inside the sandbox


async def test_a_dag_naming_a_bundle_that_was_never_imported_is_refused(api: Api) -> None:
    step = {"id": "greet", "plugin": "hello@9.9.9"}
    response = await api.client.post(
        f"{BASE}/dags", json=spec("greeter", [step]), headers=api.headers(TENANT)
    )

    assert response.status_code == 400
    assert "hello@9.9.9" in response.text


async def test_a_bundle_cache_the_sandbox_cannot_enter_fails_the_attempt_saying_why(
    make_api: MakeApi, key: Ed25519PrivateKey, tmp_path: Path, require_sandbox: None
) -> None:
    closed = tmp_path / "private"  # 0700, as pytest makes it and as a root-only dir would be
    closed.mkdir(mode=0o700)
    TrustStore(tmp_path / "trust").add_public(key.public_key())
    api = await make_api(
        trust_dir=tmp_path / "trust", bundles_dir=tmp_path / "b", bundle_cache_dir=closed / "cache"
    )
    await import_bundle(api, hello_archive(tmp_path, key))
    await api.publish(TENANT, spec("greeter", [{"id": "greet", "plugin": "hello@1.0.0"}]))

    run = await api.start(TENANT, "greeter")
    api.start_worker()
    status = await api.wait(TENANT, run["runId"], within=30)

    [greet] = (await api.get_json(TENANT, f"/runs/{run['runId']}"))["steps"]
    assert status == "failed"
    assert greet["error"]["code"] == "SANDBOX_UNAVAILABLE"
    assert greet["error"]["retryable"] is False
    assert "cannot enter" in greet["error"]["message"]
