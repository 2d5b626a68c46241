"""Secrets of a tenant: put a new version, list names and versions, delete (all audited)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from stellaorch.domain.audit import Operator
from stellaorch.domain.providers import format_utc
from stellaorch.domain.secrets import (
    SecretInvalid,
    SecretNotFound,
    check_secret_name,
    check_secret_value,
)
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.store import Connection
from stellaorch.store import secrets as stored
from stellaorch.store.secrets import SecretRow


@dataclass(frozen=True)
class SecretListing:
    """One secret as listings show it: name, current version, every version's origin."""

    name: str
    versions: tuple[SecretRow, ...]

    def document(self) -> dict[str, Any]:
        """The listing entry as JSON (never a value)."""
        current = self.versions[-1]
        return {
            "name": self.name,
            "currentVersion": current.version,
            "updatedUtc": format_utc(current.created_us),
            "updatedBy": current.created_by,
            "versions": [
                {
                    "version": r.version,
                    "createdUtc": format_utc(r.created_us),
                    "createdBy": r.created_by,
                }
                for r in self.versions
            ],
        }


class SecretService:
    """A tenant's secrets: write-only values, listings of names and versions, deletion."""

    def __init__(self, env: EngineEnv) -> None:
        self.env = env
        self.vault = env.vault

    async def put(self, tenant: str, name: str, value: bytes, operator: Operator) -> SecretListing:
        """Store a new version (audited as `secret.put` with the operator's reason)."""
        check_secret_name(name)
        check_secret_value(value, self.vault.max_value_bytes)
        try:
            value.decode()
        except UnicodeDecodeError:
            raise SecretInvalid("a secret value must be UTF-8 text") from None

        def work(conn: Connection) -> SecretListing:
            now = self.env.clock.now_us()
            version = stored.insert_secret_version(
                conn,
                tenant,
                name,
                lambda v: self.vault.seal(value, tenant, name, v),
                now,
                operator.actor,
            )
            details = {"version": version}
            record_audit(conn, operator.entry(tenant, "secret.put", f"secret:{name}", details), now)
            return _listing_of(conn, tenant, name)

        return await self.env.db.transact(work)

    async def list(self, tenant: str) -> list[SecretListing]:
        """The tenant's secrets by name."""
        rows = await self.env.db.read(lambda c: stored.list_secret_versions(c, tenant))
        return _listings(rows)

    async def delete(self, tenant: str, name: str, operator: Operator) -> int:
        """Delete every version (audited as `secret.delete`); running attempts keep theirs."""
        check_secret_name(name)

        def work(conn: Connection) -> int:
            now = self.env.clock.now_us()
            gone = stored.delete_secret(conn, tenant, name)
            if not gone:
                raise SecretNotFound(f"no secret {name!r} in tenant {tenant}")
            details = {"versions": gone}
            entry = operator.entry(tenant, "secret.delete", f"secret:{name}", details)
            record_audit(conn, entry, now)
            return gone

        return await self.env.db.transact(work)


def _listing_of(conn: Connection, tenant: str, name: str) -> SecretListing:
    rows = stored.list_secret_versions(conn, tenant, name)
    return _listings(rows)[0]


def _listings(rows: list[SecretRow]) -> list[SecretListing]:
    grouped: dict[str, list[SecretRow]] = defaultdict(list)
    for row in rows:
        grouped[row.name].append(row)
    return [SecretListing(name, tuple(grouped[name])) for name in sorted(grouped)]
