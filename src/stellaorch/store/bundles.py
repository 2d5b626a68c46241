"""Queries over imported bundles (immutable rows; every query takes the tenant)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Row, select

from stellaorch.store.dialect import serialize_on
from stellaorch.store.schema import bundles


@dataclass(frozen=True)
class BundleRow:
    """An imported bundle of a tenant."""

    tenant: str
    digest: str
    name: str
    version: str
    root_hash: str
    signed_by: str
    size_bytes: int
    manifest_json: str
    created_us: int


def _to_row(row: Row[tuple[object, ...]]) -> BundleRow:
    m = row._mapping
    return BundleRow(
        tenant=str(m["tenant"]),
        digest=str(m["digest"]),
        name=str(m["name"]),
        version=str(m["version"]),
        root_hash=str(m["root_hash"]),
        signed_by=str(m["signed_by"]),
        size_bytes=int(m["size_bytes"]),
        manifest_json=str(m["manifest_json"]),
        created_us=int(m["created_us"]),
    )


def lock_name(conn: Connection, tenant: str, name: str, version: str) -> None:
    """Serialise imports of one `name@version` (check-then-insert in one transaction)."""
    serialize_on(conn, "bundle-import", tenant, f"{name}@{version}")


def insert_bundle(conn: Connection, row: BundleRow) -> None:
    """Record an imported bundle (the caller checked, under `lock_name`, that it is new)."""
    conn.execute(bundles.insert().values(**row.__dict__))


def get_by_name(conn: Connection, tenant: str, name: str, version: str) -> BundleRow | None:
    """The tenant's bundle `name@version`."""
    query = select(bundles).where(
        bundles.c.tenant == tenant, bundles.c.name == name, bundles.c.version == version
    )
    row = conn.execute(query).first()
    return _to_row(row) if row else None


def get_by_digest(conn: Connection, tenant: str, digest: str) -> BundleRow | None:
    """The tenant's bundle with this archive digest."""
    query = select(bundles).where(bundles.c.tenant == tenant, bundles.c.digest == digest)
    row = conn.execute(query).first()
    return _to_row(row) if row else None


def list_bundles(conn: Connection, tenant: str) -> list[BundleRow]:
    """The tenant's bundles by name, then version."""
    query = (
        select(bundles)
        .where(bundles.c.tenant == tenant)
        .order_by(bundles.c.name, bundles.c.version)
    )
    return [_to_row(r) for r in conn.execute(query)]
