"""Ledger persistence: append sealed entries in batches, read chains back. Never update/delete."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import Connection, select

from stellaorch.domain.ledger import LedgerEntry, StoredEntry
from stellaorch.store.bulk import insert_rows
from stellaorch.store.dialect import enter_ledger_append
from stellaorch.store.notify import notify_committed
from stellaorch.store.schema import ledger_entries


def append_entries(conn: Connection, entries: Sequence[LedgerEntry]) -> None:
    """Insert sealed entries (their runs' rows carry the new chain heads)."""
    if not entries:
        return
    # Drawing ids and committing them happen under the shared append lock, so a reader
    # can wait for a final prefix of the global order (see stream tailing).
    enter_ledger_append(conn)
    insert_rows(conn, ledger_entries, [_row(e) for e in entries])
    # Other processes' workers and stream tailers wake when this commits (PostgreSQL).
    notify_committed(conn)


def _row(entry: LedgerEntry) -> dict[str, object]:
    return {
        "run_id": entry.run_id,
        "seq": entry.seq,
        "tenant": entry.tenant,
        "entry_type": entry.entry_type,
        "step_id": entry.step_id,
        "status": entry.status,
        "ts_us": entry.ts_us,
        "body": entry.body,
        "entry_hash": entry.entry_hash,
    }


def read_entries(conn: Connection, tenant: str, run_id: str) -> Iterator[StoredEntry]:
    """A run's entries in chain order."""
    query = (
        select(ledger_entries.c.seq, ledger_entries.c.body, ledger_entries.c.entry_hash)
        .where(ledger_entries.c.tenant == tenant, ledger_entries.c.run_id == run_id)
        .order_by(ledger_entries.c.seq)
    )
    for seq, body, entry_hash in conn.execute(query):
        yield StoredEntry(run_id, seq, body, entry_hash)


def read_entries_page(
    conn: Connection, tenant: str, run_id: str, after_seq: int, limit: int
) -> list[StoredEntry]:
    """select_entries_after: a run's entries after `after_seq` in chain order, at most `limit`."""
    c = ledger_entries.c
    query = (
        select(c.seq, c.body, c.entry_hash)
        .where(c.tenant == tenant, c.run_id == run_id, c.seq > after_seq)
        .order_by(c.seq)
        .limit(limit)
    )
    return [StoredEntry(run_id, seq, body, h) for seq, body, h in conn.execute(query)]
