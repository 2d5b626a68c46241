"""The secrets' key file and AES-GCM sealing: created 0600, loose modes refused, tags checked."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from stellaorch.domain.secrets import SecretCorrupt, SecretKeyInvalid
from stellaorch.engine.app import Orchestrator
from stellaorch.security.secretbox import Keyring, Sealed, next_path
from stellaorch.settings import Settings

VALUE = b"hunter2-but-longer"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    """A keyring whose key file does not exist yet."""
    return Keyring(tmp_path / "keys" / "secrets.kek")


def test_the_key_file_is_created_on_first_use_with_mode_0600(keyring: Keyring) -> None:
    assert not keyring.path.exists()
    keyring.seal(VALUE, "acme", "db", 1)
    assert stat.S_IMODE(keyring.path.stat().st_mode) == 0o600
    assert len(base64.b64decode(keyring.path.read_text())) == 32


def test_a_sealed_value_opens_to_itself_and_holds_no_plaintext(keyring: Keyring) -> None:
    sealed = keyring.seal(VALUE, "acme", "db", 1)
    assert VALUE not in sealed.blob
    assert keyring.open(sealed, "acme", "db", 1) == VALUE


def test_two_seals_of_one_value_differ(keyring: Keyring) -> None:
    assert keyring.seal(VALUE, "acme", "db", 1).blob != keyring.seal(VALUE, "acme", "db", 1).blob


@pytest.mark.parametrize(
    ("tenant", "name", "version"), [("bravo", "db", 1), ("acme", "dc", 1), ("acme", "db", 2)]
)
def test_a_ciphertext_is_bound_to_its_tenant_name_and_version(
    keyring: Keyring, tenant: str, name: str, version: int
) -> None:
    sealed = keyring.seal(VALUE, "acme", "db", 1)
    with pytest.raises(SecretCorrupt):
        keyring.open(sealed, tenant, name, version)


def test_a_corrupt_ciphertext_is_a_clear_error_that_leaks_nothing(keyring: Keyring) -> None:
    sealed = keyring.seal(VALUE, "acme", "db", 1)
    flipped = sealed.blob[:-1] + bytes([sealed.blob[-1] ^ 1])
    with pytest.raises(SecretCorrupt) as caught:
        keyring.open(Sealed(flipped, sealed.kek_id), "acme", "db", 1)
    message = caught.value.message
    assert "'db' version 1" in message and "damaged" in message
    assert VALUE.decode() not in message and sealed.blob.hex() not in message


def test_a_ciphertext_of_an_unknown_key_names_the_key_id(keyring: Keyring) -> None:
    sealed = keyring.seal(VALUE, "acme", "db", 1)
    with pytest.raises(SecretCorrupt, match="0000000000000000"):
        keyring.open(Sealed(sealed.blob, "0000000000000000"), "acme", "db", 1)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused_saying_why(keyring: Keyring, mode: int) -> None:
    keyring.seal(VALUE, "acme", "db", 1)
    keyring.path.chmod(mode)
    with pytest.raises(SecretKeyInvalid) as caught:
        Keyring(keyring.path).check()
    assert f"{mode:04o}" in caught.value.message and "chmod 600" in caught.value.message


def test_a_key_file_of_the_wrong_size_is_refused(keyring: Keyring) -> None:
    keyring.path.parent.mkdir(parents=True)
    keyring.path.write_text(base64.b64encode(b"short").decode())
    keyring.path.chmod(0o600)
    with pytest.raises(SecretKeyInvalid, match="32 bytes"):
        keyring.check()
    with pytest.raises(SecretKeyInvalid, match="32 bytes"):
        keyring.seal(VALUE, "acme", "db", 1)


def test_a_pending_next_key_seals_and_both_keys_open(keyring: Keyring) -> None:
    old = keyring.seal(VALUE, "acme", "db", 1)
    other = Keyring(keyring.path.parent / "other.kek")
    other.seal(b"x", "t", "n", 1)
    other.path.rename(next_path(keyring.path))
    both = Keyring(keyring.path)
    new = both.seal(VALUE, "acme", "db", 2)
    assert new.kek_id != old.kek_id
    assert both.open(old, "acme", "db", 1) == both.open(new, "acme", "db", 2) == VALUE


def test_the_orchestrator_refuses_to_open_with_a_loose_key_file(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'o.db'}", keys_dir=tmp_path / "k")
    Keyring(settings.secrets_key_path).seal(VALUE, "acme", "db", 1)
    settings.secrets_key_path.chmod(0o644)
    with pytest.raises(SecretKeyInvalid):
        Orchestrator.open(settings)
    assert not (tmp_path / "o.db").exists()


def test_the_key_file_setting_overrides_the_keys_dir(tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere.kek"
    assert Settings(keys_dir=tmp_path, secrets_key_file=chosen).secrets_key_path == chosen
    assert Settings(keys_dir=tmp_path).secrets_key_path == tmp_path / "secrets.kek"
