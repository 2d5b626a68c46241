"""Named queries of Idempotency-Key records: find, save, claim and finish a key's response."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, update

from stellaorch.store.dialect import insert_ignore
from stellaorch.store.schema import idempotency_keys

PENDING = 0  # status_code of a claimed key whose request is still running


@dataclass(frozen=True)
class StoredResponse:
    """A response kept for an Idempotency-Key (status PENDING: its request is in flight)."""

    request_hash: str
    status_code: int
    body: Any

    @property
    def pending(self) -> bool:
        """True while the request that claimed the key has not answered yet."""
        return self.status_code == PENDING


@dataclass(frozen=True)
class IdempotencyClaim:
    """One (tenant, method+path, key) and the request that holds it."""

    tenant: str
    scope_key: str
    key: str
    request_hash: str
    now_us: int
    oldest_us: int

    def save(self, conn: Connection, status_code: int, body: Any) -> None:
        """Keep the response inside the caller's transaction (the first one kept wins)."""
        response = StoredResponse(self.request_hash, status_code, body)
        save_response(
            conn, self.tenant, self.scope_key, self.key, response, self.now_us, self.oldest_us
        )


def find_response(
    conn: Connection, tenant: str, scope_key: str, key: str, oldest: int
) -> StoredResponse | None:
    """The response stored for this key, if it was stored at or after `oldest`."""
    k = idempotency_keys.c
    query = select(k.request_hash, k.status_code, k.response_body).where(
        k.tenant == tenant, k.scope_key == scope_key, k.idem_key == key, k.created_us >= oldest
    )
    row = conn.execute(query).first()
    if row is None:
        return None
    return StoredResponse(str(row[0]), int(row[1]), json.loads(row[2]))


def save_response(
    conn: Connection,
    tenant: str,
    scope_key: str,
    key: str,
    response: StoredResponse,
    now: int,
    oldest: int,
) -> None:
    """Keep a response for its key; an expired entry under the same key is replaced."""
    k = idempotency_keys.c
    conn.execute(
        delete(idempotency_keys).where(
            k.tenant == tenant, k.scope_key == scope_key, k.idem_key == key, k.created_us < oldest
        )
    )
    conn.execute(
        insert_ignore(conn, idempotency_keys, ["tenant", "scope_key", "idem_key"]),
        [
            {
                "tenant": tenant,
                "scope_key": scope_key,
                "idem_key": key,
                "request_hash": response.request_hash,
                "status_code": response.status_code,
                "response_body": json.dumps(response.body),
                "created_us": now,
            }
        ],
    )


def claim_key(conn: Connection, claim: IdempotencyClaim, stale_us: int) -> bool:
    """Take the key for one request (a PENDING row); False when another request holds it.

    A pending claim older than `stale_us` belongs to a request whose process died: it is
    taken over, so a crash never blocks a key for its whole lifetime.
    """
    k = idempotency_keys.c
    mine = (k.tenant == claim.tenant, k.scope_key == claim.scope_key, k.idem_key == claim.key)
    conn.execute(
        delete(idempotency_keys).where(
            *mine,
            (k.created_us < claim.oldest_us)
            | ((k.status_code == PENDING) & (k.created_us < stale_us)),
        )
    )
    row = {
        "tenant": claim.tenant,
        "scope_key": claim.scope_key,
        "idem_key": claim.key,
        "request_hash": claim.request_hash,
        "status_code": PENDING,
        "response_body": "null",
        "created_us": claim.now_us,
    }
    # RETURNING tells whether the row went in (rowcount is -1 on some drivers)
    inserted = conn.execute(
        insert_ignore(conn, idempotency_keys, ["tenant", "scope_key", "idem_key"])
        .values(row)
        .returning(idempotency_keys.c.created_us)
    )
    return inserted.first() is not None


def finish_key(conn: Connection, claim: IdempotencyClaim, status_code: int, body: Any) -> None:
    """Store the answer of a claimed key; an error answer frees the key for a retry."""
    k = idempotency_keys.c
    mine = (
        k.tenant == claim.tenant,
        k.scope_key == claim.scope_key,
        k.idem_key == claim.key,
        k.status_code == PENDING,
        k.created_us == claim.now_us,
    )
    if status_code >= 300:
        conn.execute(delete(idempotency_keys).where(*mine))
        return
    conn.execute(
        update(idempotency_keys)
        .where(*mine)
        .values(status_code=status_code, response_body=json.dumps(body))
    )
