"""The ledger read as the run event source: the queries of the stream's tail and its replays.

Every read first waits out the transactions between drawing ledger ids and committing them
(`await_ledger_appends`, PostgreSQL), so what it returns is a final prefix of the global order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select

from stellaorch.store.bulk import fetch_all
from stellaorch.store.dialect import await_ledger_appends
from stellaorch.store.schema import ledger_entries

_le = ledger_entries.c
_EVENT_COLUMNS = (
    _le.id,
    _le.tenant,
    _le.run_id,
    _le.entry_type,
    _le.step_id,
    _le.status,
    _le.ts_us,
    _le.body,
)


@dataclass(frozen=True)
class LedgerRow:
    """The columns of a ledger entry an event is made of; `id` is the global order."""

    id: int
    tenant: str
    run_id: str
    entry_type: str
    step_id: str | None
    status: str
    ts_us: int
    body: str


@dataclass(frozen=True)
class LedgerPosition:
    """Where an entry sits: its global `id`, and its run chain's (run_id, seq)."""

    id: int
    run_id: str
    seq: int


def snapshot_reads_are_final(dialect: str) -> bool:
    """True if a read-only snapshot already holds a final prefix of the ledger.

    SQLite commits one writer at a time and draws ids inside it, so every snapshot is one.
    PostgreSQL needs READ COMMITTED after the append lock: a REPEATABLE READ snapshot is
    taken before that lock is granted and could miss an id below a visible one.
    """
    return dialect == "sqlite"


# The tail runs these after every commit: built and compiled once (store/bulk.py), not per read.
_AFTER = _le.id > bindparam("after")
_max_id = select(func.max(_le.id))
_entries_after = select(*_EVENT_COLUMNS).where(_AFTER).order_by(_le.id).limit(bindparam("limit"))
_positions_after = (
    select(_le.id, _le.run_id, _le.seq).where(_AFTER).order_by(_le.id).limit(bindparam("limit"))
)
_entries_between = (
    select(*_EVENT_COLUMNS).where(_AFTER, _le.id <= bindparam("through")).order_by(_le.id)
)
_tenant_entries_after = (
    select(*_EVENT_COLUMNS)
    .where(_le.tenant == bindparam("tenant"), _AFTER)
    .order_by(_le.id)
    .limit(bindparam("limit"))
)

_first_of_types = (
    select(*_EVENT_COLUMNS)
    .where(
        _le.run_id == bindparam("run_id"),
        _le.tenant == bindparam("tenant"),
        _le.entry_type.in_(bindparam("types", expanding=True)),
    )
    .order_by(_le.seq)
    .limit(1)
)


def read_first_of_types(
    conn: Connection, tenant: str, run_id: str, types: Sequence[str]
) -> LedgerRow | None:
    """The run's earliest entry of one of `types` (a run's chain is short to its first signal)."""
    params = {"tenant": tenant, "run_id": run_id, "types": list(types)}
    rows = fetch_all(conn, "first_of_types", _first_of_types, params)
    return LedgerRow(*rows[0]) if rows else None


def read_max_id(conn: Connection) -> int:
    """read_max_id: where a new tail starts (0 for an empty ledger); ids up to it are final."""
    await_ledger_appends(conn)
    rows = fetch_all(conn, "ledger_max_id", _max_id, {})
    return int(rows[0][0] or 0) if rows else 0


def read_entries_after(conn: Connection, after: int, limit: int) -> list[LedgerRow]:
    """read_entries_after: every tenant's entries with id > after, in global order."""
    await_ledger_appends(conn)
    params = {"after": after, "limit": limit}
    return [LedgerRow(*row) for row in fetch_all(conn, "entries_after", _entries_after, params)]


def read_positions_after(conn: Connection, after: int, limit: int) -> list[LedgerPosition]:
    """read_positions_after: id, run_id and seq of every entry with id > after, in order."""
    await_ledger_appends(conn)
    params = {"after": after, "limit": limit}
    rows = fetch_all(conn, "positions_after", _positions_after, params)
    return [LedgerPosition(*row) for row in rows]


def read_entries_between(conn: Connection, after: int, through: int) -> list[LedgerRow]:
    """read_entries_between: every tenant's entries with after < id <= through, in order.

    Only for ids a read in this transaction already found final (no append lock taken here).
    """
    params = {"after": after, "through": through}
    return [LedgerRow(*r) for r in fetch_all(conn, "entries_between", _entries_between, params)]


def read_tenant_entries_after(
    conn: Connection, tenant: str, after: int, limit: int
) -> list[LedgerRow]:
    """read_tenant_entries_after: one tenant's entries with id > after (ix_ledger_tenant_id)."""
    await_ledger_appends(conn)
    params = {"tenant": tenant, "after": after, "limit": limit}
    rows = fetch_all(conn, "tenant_entries_after", _tenant_entries_after, params)
    return [LedgerRow(*row) for row in rows]
