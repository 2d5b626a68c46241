"""Queries over published DAG versions (immutable; only `enabled` ever changes)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Row, func, select, update

from stellaorch.store.dialect import serialize_on
from stellaorch.store.schema import dag_versions


@dataclass(frozen=True)
class DagVersionRow:
    """A stored DAG version."""

    tenant: str
    dag_id: str
    version: str
    seq: int
    spec_json: str
    spec_hash: str
    enabled: bool
    created_us: int
    signed_by: str | None = None  # key id of the verified DSSE signature, if any


def _to_row(row: Row[tuple[object, ...]]) -> DagVersionRow:
    m = row._mapping
    return DagVersionRow(
        tenant=str(m["tenant"]),
        dag_id=str(m["dag_id"]),
        version=str(m["version"]),
        seq=int(m["seq"]),
        spec_json=str(m["spec_json"]),
        spec_hash=str(m["spec_hash"]),
        enabled=bool(m["enabled"]),
        created_us=int(m["created_us"]),
        signed_by=None if m["signed_by"] is None else str(m["signed_by"]),
    )


def insert_version(
    conn: Connection,
    tenant: str,
    dag_id: str,
    version: str,
    spec_json: str,
    spec_hash: str,
    now_us: int,
    signed_by: str | None = None,
) -> DagVersionRow:
    """Publish a new version after the newest one of the same DAG."""
    serialize_on(conn, "dag-publish", tenant, dag_id)  # one `seq` per version, in order
    last = conn.execute(
        select(func.max(dag_versions.c.seq)).where(
            dag_versions.c.tenant == tenant, dag_versions.c.dag_id == dag_id
        )
    ).scalar()
    seq = int(last or 0) + 1
    row = DagVersionRow(tenant, dag_id, version, seq, spec_json, spec_hash, True, now_us, signed_by)
    conn.execute(dag_versions.insert().values(**row.__dict__))
    return row


def get_version(conn: Connection, tenant: str, dag_id: str, version: str) -> DagVersionRow | None:
    """One version, enabled or not."""
    query = select(dag_versions).where(
        dag_versions.c.tenant == tenant,
        dag_versions.c.dag_id == dag_id,
        dag_versions.c.version == version,
    )
    row = conn.execute(query).first()
    return _to_row(row) if row else None


def latest_enabled(conn: Connection, tenant: str, dag_id: str) -> DagVersionRow | None:
    """The most recently published enabled version."""
    query = (
        select(dag_versions)
        .where(
            dag_versions.c.tenant == tenant,
            dag_versions.c.dag_id == dag_id,
            dag_versions.c.enabled.is_(True),
        )
        .order_by(dag_versions.c.seq.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    return _to_row(row) if row else None


def list_versions(conn: Connection, tenant: str, dag_id: str | None = None) -> list[DagVersionRow]:
    """Versions by dagId, then newest publication first."""
    query = select(dag_versions).where(dag_versions.c.tenant == tenant)
    if dag_id is not None:
        query = query.where(dag_versions.c.dag_id == dag_id)
    query = query.order_by(dag_versions.c.dag_id, dag_versions.c.seq.desc())
    return [_to_row(r) for r in conn.execute(query)]


def set_enabled(conn: Connection, tenant: str, dag_id: str, version: str, enabled: bool) -> bool:
    """Enable or disable a version; False when there is no such version."""
    stmt = (
        update(dag_versions)
        .where(
            dag_versions.c.tenant == tenant,
            dag_versions.c.dag_id == dag_id,
            dag_versions.c.version == version,
        )
        .values(enabled=enabled)
    )
    return conn.execute(stmt).rowcount > 0
