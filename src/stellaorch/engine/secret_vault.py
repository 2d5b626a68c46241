"""The vault: the key-encryption key and this process's cache of decrypted secret values.

Values are cached by tenant, name, version and nonce, so a cached value is never stale: the
claim transaction reads which version is current and the cache only saves the decryption.
`warm` drops the cache and decrypts every stored version again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

from stellaorch.domain.secrets import ResolvedSecrets, SecretNotFound
from stellaorch.observability.secret_values import KNOWN_SECRETS
from stellaorch.security.secretbox import NONCE_BYTES, Keyring, Sealed
from stellaorch.settings import Settings
from stellaorch.store import Connection
from stellaorch.store import secrets as stored
from stellaorch.store.secrets import SecretRow

_CacheKey = tuple[str, str, int, bytes]


class SecretVault:
    """The key-encryption key and this process's cache of decrypted values."""

    def __init__(self, settings: Settings) -> None:
        self.keyring = Keyring(settings.secrets_key_path)
        self.max_value_bytes = settings.secret_max_value_bytes
        self._lock = threading.Lock()
        self._cache: dict[_CacheKey, str] = {}

    def check(self) -> None:
        """Refuse to start on a key file readable by others (SecretKeyInvalid says why)."""
        self.keyring.check()

    def seal(self, value: bytes, tenant: str, name: str, version: int) -> tuple[bytes, str]:
        """A value sealed for one version: (nonce || ciphertext, KEK id)."""
        sealed = self.keyring.seal(value, tenant, name, version)
        return sealed.blob, sealed.kek_id

    def value(self, row: SecretRow) -> str:
        """The plaintext of one stored version (decrypted once per process)."""
        key = (row.tenant, row.name, row.version, row.ciphertext[:NONCE_BYTES])
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        sealed = Sealed(row.ciphertext, row.kek_id)
        plain = self.keyring.open(sealed, row.tenant, row.name, row.version).decode()
        with self._lock:
            self._cache[key] = plain
        KNOWN_SECRETS.add([plain])
        return plain

    def resolve(self, conn: Connection, tenant: str, names: Iterable[str]) -> ResolvedSecrets:
        """The current version of each name and every live value; SecretNotFound if missing."""
        wanted = sorted(set(names))
        by_name: dict[str, list[SecretRow]] = defaultdict(list)
        for row in stored.secret_versions_of(conn, tenant, wanted):
            by_name[row.name].append(row)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            refs = ", ".join(f"${{secrets.{n}}}" for n in missing)
            raise SecretNotFound(
                f"the step references {refs}, which does not exist for tenant {tenant}",
                details={"references": [f"${{secrets.{n}}}" for n in missing]},
            )
        versions = {n: rows[-1].version for n, rows in by_name.items()}
        values = {n: self.value(rows[-1]) for n, rows in by_name.items()}
        live = tuple(self.value(r) for rows in by_name.values() for r in rows)
        return ResolvedSecrets(versions, values, live)

    def warm(self, conn: Connection, tenants: Iterable[str] | None) -> dict[str, int]:
        """Drop cached values (of `tenants`, or all) and decrypt every stored version again."""
        chosen = None if tenants is None else set(tenants)
        with self._lock:
            for key in [k for k in self._cache if chosen is None or k[0] in chosen]:
                del self._cache[key]
        pairs = stored.current_secret_names(conn, chosen)
        grouped: dict[str, list[str]] = defaultdict(list)
        for tenant, name in pairs:
            grouped[tenant].append(name)
        values = 0
        for tenant, names in grouped.items():
            values += len(self.resolve(conn, tenant, names).live)
        return {"secrets": len(pairs), "values": values}
