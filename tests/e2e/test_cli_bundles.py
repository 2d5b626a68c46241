"""`stella orch bundle …`, `keys trust …` and signed `dag publish`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_cli_http import (
    Service,
    argv,
    assert_one_error_line,
    base_env,
    service,  # noqa: F401 (the module's own `serve` fixture)
    stella,
)

TIMEOUT = 60
BUNDLE_DESCRIPTOR = "name: hello\nversion: '1.0.0'\nplugin: {type: script, entrypoint: run.sh}\n"


def write_source(directory: Path) -> Path:
    """A bundle source: one script, one data file, the descriptor."""
    (directory / "lib").mkdir(parents=True)
    (directory / "run.sh").write_text("#!/bin/sh\necho hello\n")
    (directory / "run.sh").chmod(0o755)
    (directory / "lib" / "data.txt").write_text("42\n")
    (directory / "stella-bundle.yaml").write_text(BUNDLE_DESCRIPTOR)
    return directory


@pytest.fixture
def local_env(tmp_path: Path) -> dict[str, str]:
    """A key directory with one generated key, and no other STELLA_* setting."""
    env = {**base_env(), "STELLA_ORCH_KEYS_DIR": str(tmp_path / "keys")}
    assert stella("keys", "generate", env=env).returncode == 0
    return env


def private_key(env: dict[str, str]) -> str:
    """The generated private key file of the environment's key directory."""
    return str(next(Path(env["STELLA_ORCH_KEYS_DIR"]).glob("*.private.pem")))


def build_in(directory: Path, umask: int, env: dict[str, str]) -> bytes:
    """Build the source in `directory` under `umask` in a subprocess; the archive's bytes."""
    write_source(directory / "src")
    for path in (directory / "src").rglob("*"):
        os.utime(path, (hash(str(directory)) % 10**9, hash(str(directory)) % 10**9))
    out = directory / "out.tgz"
    done = subprocess.run(
        argv("bundle", "build", str(directory / "src"), "--out", str(out)),
        env=env, capture_output=True, text=True, timeout=TIMEOUT,
        preexec_fn=lambda: os.umask(umask),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def test_build_is_byte_identical_across_directories_umasks_and_clocks(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    assert build_in(tmp_path / "one", 0o022, local_env) == build_in(
        tmp_path / "two" / "deeper", 0o077, local_env
    )


def test_build_sign_trust_verify_and_revoke_with_exit_codes(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    env, bundle = local_env, str(tmp_path / "hello-1.0.0.stella.bundle.tgz")
    built = stella("bundle", "build", str(write_source(tmp_path / "src")), "--out", bundle, env=env)
    assert built.returncode == 0 and json.loads(built.stdout)["rootHash"].startswith("sha256:")
    unsigned = stella("bundle", "verify", bundle, env=env)
    assert unsigned.returncode == 2
    assert_one_error_line(unsigned, "SIGNATURE_REQUIRED")
    assert stella("bundle", "sign", bundle, "--key", private_key(env), env=env).returncode == 0
    untrusted = stella("bundle", "verify", bundle, env=env)
    assert untrusted.returncode == 3
    assert_one_error_line(untrusted, "SIGNER_NOT_TRUSTED")
    added = stella("keys", "trust", "add", private_key(env), env=env)
    assert added.returncode == 0
    kid = added.stdout.strip()
    assert kid in stella("keys", "trust", "list", env=env).stdout
    verified = stella("bundle", "verify", bundle, "-o", "json", env=env)
    assert verified.returncode == 0 and json.loads(verified.stdout)["signedBy"] == kid
    assert stella("keys", "trust", "remove", kid, env=env).returncode == 0
    assert stella("bundle", "verify", bundle, env=env).returncode == 3


def test_verify_names_a_tampered_entry_and_a_missing_file(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    env, bundle = local_env, tmp_path / "b.tgz"
    stella("bundle", "build", str(write_source(tmp_path / "src")), "--out", str(bundle), env=env)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    tampered = stella("bundle", "verify", str(bundle), env=env)
    assert tampered.returncode == 2
    assert_one_error_line(tampered, "BUNDLE_INVALID")
    missing = stella("bundle", "verify", str(tmp_path / "nothing.tgz"), env=env)
    assert missing.returncode == 4
    assert_one_error_line(missing, "NOT_FOUND")


def test_build_sign_import_publish_run_against_serve(
    service: Service,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    env = service.env
    key = str(next((service.workdir / "keys").glob("*.private.pem")))
    bundle = str(tmp_path / "hello.tgz")
    src = str(write_source(tmp_path / "src"))
    assert stella("bundle", "build", src, "--out", bundle, env=env).returncode == 0
    assert stella("bundle", "sign", bundle, "--key", key, env=env).returncode == 0
    imported = stella("bundle", "import", bundle, "--reason", "e2e", "-o", "json", env=env)
    assert imported.returncode == 0, imported.stderr
    spec = tmp_path / "signed.yaml"
    spec.write_text("dagId: signed-e2e\nversion: 1\nsteps:\n  - {id: a, plugin: noop}\n")
    published = stella("dag", "publish", "--file", str(spec), "--reason", "e2e", "-o", "json",
                       env=env)  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["signedBy"] == json.loads(imported.stdout)["signedBy"]
    ran = stella("run", "start", "--dag-id", "signed-e2e", "--wait", "-o", "json", env=env)
    assert ran.returncode == 0, ran.stderr
    checked = stella("bundle", "verify", "--all", env=env)
    assert checked.returncode == 0 and "hello" in checked.stdout


def test_serve_requires_signatures_and_refuses_a_forged_one(
    service: Service,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    spec = tmp_path / "forged.yaml"
    spec.write_text("dagId: forged\nversion: 1\nsteps:\n  - {id: a, plugin: noop}\n")
    envelope = {"payloadType": "application/vnd.stella.dag+json", "payload": "e30=",
                "signatures": [{"keyid": "0123456789abcdef", "sig": "AAAA"}]}  # fmt: skip
    (tmp_path / "sig.dsse").write_text(json.dumps(envelope))
    args = ["dag", "publish", "--file", str(spec), "--reason", "e2e"]
    forged = stella(*args, "--signature", str(tmp_path / "sig.dsse"), env=service.env)
    assert forged.returncode == 2
    assert_one_error_line(forged, "SIGNATURE_INVALID")
    no_key = {**service.env, "STELLA_ORCH_KEYS_DIR": str(tmp_path / "empty")}
    unsigned = stella(*args, env=no_key)
    assert unsigned.returncode == 2
    assert_one_error_line(unsigned, "SIGNATURE_REQUIRED")
