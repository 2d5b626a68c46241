"""Rotation of the secrets' key-encryption key: re-seal every stored version under a new key.

1. A new key is written beside the current one (`secrets.kek.next`, mode 0600); from then on
   every process that reads the key files seals under it and can open under both.
2. One transaction re-seals every version of every tenant under the new key.
3. The old key is kept as `secrets.kek.retired-<id>` (backups taken before need it), and
   the new key replaces `secrets.kek` atomically.
A rotation that stopped half-way is finished by running it again: step 1 reuses the pending
key, and rows already sealed under it are simply sealed again.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from stellaorch.engine.env import EngineEnv
from stellaorch.security.secretbox import (
    KEY_BYTES,
    Keyring,
    Sealed,
    key_id,
    next_path,
    read_key_file,
    write_key_file,
)
from stellaorch.store import Connection
from stellaorch.store import secrets as stored


@dataclass(frozen=True)
class Rotated:
    """What a rotation did: how many versions were re-sealed, from which key to which."""

    resealed: int
    previous_kek_id: str
    kek_id: str
    retired_file: str

    def document(self) -> dict[str, object]:
        """The rotation's report as JSON (key ids only, never key bytes)."""
        return {
            "resealed": self.resealed,
            "previousKekId": self.previous_kek_id,
            "kekId": self.kek_id,
            "retiredKeyFile": self.retired_file,
        }


async def rotate_secrets_key(env: EngineEnv) -> Rotated:
    """Re-seal every secret version under a new KEK, then make it the current key file."""
    path = env.vault.keyring.path
    env.vault.keyring.current_id  # noqa: B018 - creates the key file if there is none yet
    old = read_key_file(path)
    pending = next_path(path)
    if not pending.exists():
        write_key_file(pending, secrets.token_bytes(KEY_BYTES))
    keyring = Keyring(path)  # reads both files: opens under either, seals under the new one

    def reseal(conn: Connection) -> int:
        rows = stored.all_secret_versions(conn)
        for row in rows:
            plain = keyring.open(
                Sealed(row.ciphertext, row.kek_id), row.tenant, row.name, row.version
            )
            fresh = keyring.seal(plain, row.tenant, row.name, row.version)
            stored.reseal_secret_version(conn, row, fresh.blob, fresh.kek_id)
        return len(rows)

    count = await env.db.transact(reseal)
    retired = path.with_name(f"{path.name}.retired-{key_id(old)}")
    if not retired.exists():
        write_key_file(retired, old)
    new_id = keyring.current_id
    os.replace(pending, path)
    env.vault.keyring.reload()
    return Rotated(count, key_id(old), new_id, str(retired))
