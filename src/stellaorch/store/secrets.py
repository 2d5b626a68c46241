"""Named queries of secret versions: add, list (no ciphertext), read for resolving, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, select, update

from stellaorch.store.schema import secret_versions

_s = secret_versions.c
# Seals the value for a version number: (nonce || ciphertext, KEK id).
SealFn = Callable[[int], tuple[bytes, str]]


@dataclass(frozen=True)
class SecretRow:
    """One stored version: who set it and when; `ciphertext` is empty in listings."""

    tenant: str
    name: str
    version: int
    kek_id: str
    created_us: int
    created_by: str
    ciphertext: bytes = b""


def insert_secret_version(
    conn: Connection, tenant: str, name: str, sealer: SealFn, created_us: int, created_by: str
) -> int:
    """Add the next version of `name` (sealed by `sealer(version)`); returns its number."""
    last = conn.execute(
        select(func.max(_s.version)).where(_s.tenant == tenant, _s.name == name)
    ).scalar()
    version = int(last or 0) + 1
    blob, kek_id = sealer(version)
    conn.execute(
        secret_versions.insert().values(
            tenant=tenant,
            name=name,
            version=version,
            ciphertext=blob,
            kek_id=kek_id,
            created_us=created_us,
            created_by=created_by,
        )
    )
    return version


def list_secret_versions(conn: Connection, tenant: str, name: str | None = None) -> list[SecretRow]:
    """Every version of the tenant's secrets (or one's), by name and version, no ciphertext."""
    columns = [_s.tenant, _s.name, _s.version, _s.kek_id, _s.created_us, _s.created_by]
    query = select(*columns).where(_s.tenant == tenant).order_by(_s.name, _s.version)
    if name is not None:
        query = query.where(_s.name == name)
    return [SecretRow(*row) for row in conn.execute(query)]


def secret_versions_of(conn: Connection, tenant: str, names: Iterable[str]) -> list[SecretRow]:
    """Every version of the named secrets of the tenant, with ciphertext, by name and version."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    query = (
        select(secret_versions)
        .where(_s.tenant == tenant, _s.name.in_(wanted))
        .order_by(_s.name, _s.version)
    )
    return [_row(r) for r in conn.execute(query)]


def current_secret_names(conn: Connection, tenants: Iterable[str] | None) -> list[tuple[str, str]]:
    """(tenant, name) of every stored secret, of the given tenants or all (maintenance)."""
    query = select(_s.tenant, _s.name).distinct().order_by(_s.tenant, _s.name)
    if tenants is not None:
        query = query.where(_s.tenant.in_(sorted(set(tenants))))
    return [(t, n) for t, n in conn.execute(query)]


def delete_secret(conn: Connection, tenant: str, name: str) -> int:
    """Delete every version of the tenant's secret; returns how many rows went."""
    result = conn.execute(delete(secret_versions).where(_s.tenant == tenant, _s.name == name))
    return int(result.rowcount or 0)


def all_secret_versions(conn: Connection) -> list[SecretRow]:
    """Every stored version of every tenant, with ciphertext (maintenance: KEK rotation)."""
    query = select(secret_versions).order_by(_s.tenant, _s.name, _s.version)
    return [_row(r) for r in conn.execute(query)]


def reseal_secret_version(conn: Connection, row: SecretRow, blob: bytes, kek_id: str) -> None:
    """Replace one version's ciphertext (maintenance: KEK rotation re-seals every row)."""
    conn.execute(
        update(secret_versions)
        .where(_s.tenant == row.tenant, _s.name == row.name, _s.version == row.version)
        .values(ciphertext=blob, kek_id=kek_id)
    )


def _row(r: object) -> SecretRow:
    m = r._mapping  # type: ignore[attr-defined]
    return SecretRow(
        m["tenant"],
        m["name"],
        m["version"],
        m["kek_id"],
        m["created_us"],
        m["created_by"],
        bytes(m["ciphertext"]),
    )
