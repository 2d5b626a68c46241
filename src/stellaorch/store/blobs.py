"""Content-addressed storage of logs and artifacts, per tenant."""

from __future__ import annotations

from sqlalchemy import Connection, select

from stellaorch.domain.canonical import sha256_hex
from stellaorch.store.dialect import insert_ignore
from stellaorch.store.schema import blobs


def blob_ref(content: bytes) -> str:
    """The `sha256:` reference that `content` is stored under."""
    return "sha256:" + sha256_hex(content)


def put_blob(conn: Connection, tenant: str, content: bytes, media_type: str, now_us: int) -> str:
    """Store `content` once under its hash and return the `sha256:` reference."""
    ref = blob_ref(content)
    row = {
        "tenant": tenant,
        "hash": ref,
        "media_type": media_type,
        "size": len(content),
        "content": content,
        "created_us": now_us,
    }
    conn.execute(insert_ignore(conn, blobs, ["tenant", "hash"]), [row])
    return ref


def get_blob(conn: Connection, tenant: str, ref: str) -> tuple[bytes, str] | None:
    """The content and media type behind a reference, only for the owning tenant."""
    query = select(blobs.c.content, blobs.c.media_type).where(
        blobs.c.tenant == tenant, blobs.c.hash == ref
    )
    row = conn.execute(query).first()
    return (bytes(row[0]), str(row[1])) if row else None
