"""Live log chunks of attempts: appended while an attempt runs, read by `run logs`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from stellaorch.store.schema import attempt_log_chunks

_c = attempt_log_chunks.c


@dataclass(frozen=True)
class LogChunk:
    """One flushed piece of what an attempt printed (redacted before it got here)."""

    tenant: str
    run_id: str
    step_id: str
    attempt: int
    seq: int
    content: str
    created_us: int


def append_chunks(conn: Connection, chunks: Sequence[LogChunk]) -> None:
    """Insert flushed chunks (each attempt's seq values are new: the worker counts them)."""
    if chunks:
        rows = [vars(chunk) for chunk in chunks]
        conn.execute(insert(attempt_log_chunks), rows)


def read_chunks(
    conn: Connection, tenant: str, run_id: str, step_id: str, attempt: int, after: int, limit: int
) -> list[tuple[int, str]]:
    """Up to `limit` of one attempt's chunks with seq > `after`, as (seq, content), in order."""
    query = (
        select(_c.seq, _c.content)
        .where(
            _c.tenant == tenant,
            _c.run_id == run_id,
            _c.step_id == step_id,
            _c.attempt == attempt,
            _c.seq > after,
        )
        .order_by(_c.seq)
        .limit(limit)
    )
    return [(int(seq), str(content)) for seq, content in conn.execute(query)]


def step_chunk_texts(conn: Connection, tenant: str, run_id: str, step_id: str) -> dict[int, str]:
    """Every attempt's chunks of one step joined into text, by attempt number."""
    query = (
        select(_c.attempt, _c.content)
        .where(_c.tenant == tenant, _c.run_id == run_id, _c.step_id == step_id)
        .order_by(_c.attempt, _c.seq)
    )
    texts: dict[int, list[str]] = defaultdict(list)
    for attempt, content in conn.execute(query):
        texts[int(attempt)].append(str(content))
    return {attempt: "".join(parts) for attempt, parts in texts.items()}


def drop_attempt_chunks(
    conn: Connection, tenant: str, run_id: str, step_id: str, attempt: int
) -> None:
    """Delete one attempt's live chunks: its whole log is stored, so they are a copy."""
    conn.execute(
        delete(attempt_log_chunks).where(
            _c.tenant == tenant,
            _c.run_id == run_id,
            _c.step_id == step_id,
            _c.attempt == attempt,
        )
    )
