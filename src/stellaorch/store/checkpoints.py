"""Named queries of ledger checkpoints: the writer's cursor, new heads, append, read back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from stellaorch.store.schema import ledger_checkpoints, ledger_entries, runs

_c = ledger_checkpoints.c
_le = ledger_entries.c


@dataclass(frozen=True)
class HeadRow:
    """One ledger entry as a checkpoint sees it: where it is and what it hashes to."""

    id: int
    tenant: str
    run_id: str
    seq: int
    entry_hash: str
    started_us: int | None


@dataclass(frozen=True)
class CheckpointRow:
    """A stored checkpoint."""

    tenant: str
    seq: int
    created_us: int
    through_id: int
    entries: int
    last_entry_hash: str
    checkpoint_hash: str
    envelope_json: str


def read_cursor(conn: Connection) -> int:
    """read_checkpoint_cursor: the newest ledger id any checkpoint covers (0: none yet)."""
    return int(conn.execute(select(func.max(_c.through_id))).scalar() or 0)


def read_heads_between(conn: Connection, after: int, through: int, limit: int) -> list[HeadRow]:
    """read_heads_between: entries with after < id <= through (final ids), in id order."""
    query = (
        select(_le.id, _le.tenant, _le.run_id, _le.seq, _le.entry_hash, runs.c.started_us)
        .join(runs, runs.c.run_id == _le.run_id)
        .where(_le.id > after, _le.id <= through)
        .order_by(_le.id)
        .limit(limit)
    )
    return [HeadRow(*row) for row in conn.execute(query)]


def read_latest(conn: Connection, tenant: str) -> CheckpointRow | None:
    """read_latest_checkpoint: the tenant's newest checkpoint."""
    query = select(ledger_checkpoints).where(_c.tenant == tenant).order_by(_c.seq.desc()).limit(1)
    row = conn.execute(query).first()
    return CheckpointRow(**row._mapping) if row is not None else None


def insert_checkpoint(conn: Connection, row: CheckpointRow) -> None:
    """Append a checkpoint (never updated, never deleted; (tenant, seq) is unique)."""
    conn.execute(ledger_checkpoints.insert().values(**row.__dict__))


def read_checkpoints(
    conn: Connection, tenant: str, from_us: int, after_seq: int, limit: int
) -> list[CheckpointRow]:
    """read_checkpoints: the tenant's checkpoints created at or after `from_us`, by seq."""
    query = (
        select(ledger_checkpoints)
        .where(_c.tenant == tenant, _c.created_us >= from_us, _c.seq > after_seq)
        .order_by(_c.seq)
        .limit(limit)
    )
    return [CheckpointRow(**r._mapping) for r in conn.execute(query)]
