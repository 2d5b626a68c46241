"""The ledger read as the run event source: the queries of the stream's tail and its replays.

Every read first waits out the transactions between drawing ledger ids and committing them
(`await_ledger_appends`, PostgreSQL), so what it returns is a final prefix of the global order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

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


def read_max_id(conn: Connection) -> int:
    """read_max_id: where a new tail starts (0 for an empty ledger); ids up to it are final."""
    await_ledger_appends(conn)
    return int(conn.execute(select(func.max(_le.id))).scalar() or 0)


def read_entries_after(conn: Connection, after: int, limit: int) -> list[LedgerRow]:
    """read_entries_after: every tenant's entries with id > after, in global order."""
    await_ledger_appends(conn)
    query = select(*_EVENT_COLUMNS).where(_le.id > after).order_by(_le.id).limit(limit)
    return [LedgerRow(*row) for row in conn.execute(query)]


def read_positions_after(conn: Connection, after: int, limit: int) -> list[LedgerPosition]:
    """read_positions_after: id, run_id and seq of every entry with id > after, in order."""
    await_ledger_appends(conn)
    query = select(_le.id, _le.run_id, _le.seq).where(_le.id > after).order_by(_le.id).limit(limit)
    return [LedgerPosition(*row) for row in conn.execute(query)]


def read_entries_between(conn: Connection, after: int, through: int) -> list[LedgerRow]:
    """read_entries_between: every tenant's entries with after < id <= through, in order.

    Only for ids a read in this transaction already found final (no append lock taken here).
    """
    query = select(*_EVENT_COLUMNS).where(_le.id > after, _le.id <= through).order_by(_le.id)
    return [LedgerRow(*row) for row in conn.execute(query)]


def read_tenant_entries_after(
    conn: Connection, tenant: str, after: int, limit: int
) -> list[LedgerRow]:
    """read_tenant_entries_after: one tenant's entries with id > after (ix_ledger_tenant_id)."""
    await_ledger_appends(conn)
    query = (
        select(*_EVENT_COLUMNS)
        .where(_le.tenant == tenant, _le.id > after)
        .order_by(_le.id)
        .limit(limit)
    )
    return [LedgerRow(*row) for row in conn.execute(query)]
