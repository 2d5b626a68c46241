"""Ledger persistence: append sealed entries in batches, read chains back. Never update/delete."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from stellaorch.domain.ledger import EntryDraft, LedgerEntry, StoredEntry, seal
from stellaorch.store.bulk import execute_many, insert_rows
from stellaorch.store.dialect import enter_ledger_append
from stellaorch.store.notify import notify_committed
from stellaorch.store.schema import ledger_entries, runs


@dataclass
class ChainHead:
    """Where a run's chain currently ends."""

    seq: int
    head: str


_update_head = (
    update(runs)
    .where(runs.c.run_id == bindparam("b_run_id"))
    .values(ledger_seq=bindparam("b_seq"), ledger_head=bindparam("b_head"))
)


class LedgerWriter:
    """Collects the entries of one transaction and writes them, and the new heads, at flush."""

    def __init__(self) -> None:
        self._heads: dict[str, ChainHead] = {}
        self._moved: set[str] = set()
        self.entries: list[LedgerEntry] = []

    def track(self, run_id: str, seq: int, head: str) -> None:
        """Start from a run's stored head (call once per run per transaction)."""
        self._heads.setdefault(run_id, ChainHead(seq, head))

    def append(self, draft: EntryDraft) -> LedgerEntry:
        """Chain a new entry after the run's current head."""
        head = self._heads[draft.run_id]
        entry = seal(draft, head.seq + 1, head.head)
        head.seq, head.head = entry.seq, entry.entry_hash
        self._moved.add(draft.run_id)
        self.entries.append(entry)
        return entry

    def head(self, run_id: str) -> ChainHead:
        """The run's head as of the entries appended so far."""
        return self._heads[run_id]

    def flush(self, conn: Connection, skip_heads: Collection[str] = ()) -> list[LedgerEntry]:
        """Insert pending entries and move touched runs' heads (but `skip_heads`' ones)."""
        if not self.entries:
            return []
        # Drawing ids and committing them happen under the shared append lock, so a reader
        # can wait for a final prefix of the global order (see stream tailing).
        enter_ledger_append(conn)
        insert_rows(conn, ledger_entries, [_row(e) for e in self.entries])
        # Other processes' workers and stream tailers wake when this commits (PostgreSQL).
        notify_committed(conn)
        moved = [
            {"b_run_id": r, "b_seq": self._heads[r].seq, "b_head": self._heads[r].head}
            for r in sorted(self._moved)
            if r not in skip_heads
        ]
        execute_many(conn, "update_head", _update_head, moved)
        written, self.entries = self.entries, []
        self._moved.clear()
        return written


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
