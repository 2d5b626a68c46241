"""The few statements whose SQL differs between SQLite and PostgreSQL.

SQLite runs one write transaction at a time (every transaction begins IMMEDIATE), so the row
and advisory locks below are PostgreSQL's way to get the same guarantees with concurrent
transactions, and are no-ops on SQLite. The lock order every unit of work follows on
PostgreSQL is documented in docs/decisions/0002-postgresql.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from sqlalchemy import Connection, Insert, Select, Table, text
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table, keys: list[str]) -> Insert:
    """INSERT that silently skips rows whose `keys` already exist."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)


def lock_rows(conn: Connection, query: Select[tuple[object, ...]]) -> Select[tuple[object, ...]]:
    """Row locks where the dialect has them (SQLite's IMMEDIATE transaction already serialises)."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update()
    return query


def claim_lock(conn: Connection, query: Select[tuple[object, ...]]) -> Select[tuple[object, ...]]:
    """Lock claimable rows, skipping those another worker holds (PostgreSQL's SKIP LOCKED)."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


SelectT = Select[tuple[object, ...]]


def per_dialect(
    query: SelectT, adapt: Callable[[Connection, SelectT], SelectT]
) -> Callable[[Connection], SelectT]:
    """Build a hot statement once per dialect instead of on every call."""
    built: dict[str, SelectT] = {}

    def for_conn(conn: Connection) -> SelectT:
        name = conn.dialect.name
        if name not in built:
            built[name] = adapt(conn, query)
        return built[name]

    return for_conn


# -- advisory locks (PostgreSQL) ----------------------------------------------------------
def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name (the same in every process)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# Held shared by every transaction that appends ledger entries, from just before the insert
# (which draws the ids) to commit; taken exclusive by a reader that needs a final prefix.
LEDGER_KEY = advisory_key("stellaorch", "ledger-append")

_lock_shared = text("SELECT pg_advisory_xact_lock_shared(:key)")
_lock = text("SELECT pg_advisory_xact_lock(:key)")
_try_lock = text("SELECT pg_try_advisory_xact_lock(:key)")


def enter_ledger_append(conn: Connection) -> None:
    """Announce that this transaction is about to draw ledger ids (held until commit)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_lock_shared, {"key": LEDGER_KEY})


def await_ledger_appends(conn: Connection) -> None:
    """Wait until no transaction is between drawing ledger ids and committing them.

    Afterwards, until this transaction ends, every ledger id up to the largest visible one is
    final: committed (and visible to the next statement) or rolled back, never still coming.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_lock, {"key": LEDGER_KEY})


def serialize_on(conn: Connection, *name: str) -> None:
    """Serialise transactions on a name until commit (read-then-insert sections)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_lock, {"key": advisory_key(*name)})


def lift_statement_timeout(conn: Connection) -> None:
    """No statement timeout for the rest of this transaction (schema migrations)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")


def try_lock_names(conn: Connection, namespace: str, names: Iterable[str]) -> set[str]:
    """Lock each name until commit without waiting; returns the names this transaction got."""
    wanted = sorted(set(names))
    if conn.dialect.name != "postgresql":
        return set(wanted)
    return {
        name
        for name in wanted
        if conn.execute(_try_lock, {"key": advisory_key(namespace, name)}).scalar()
    }


_server_now_us = text("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)")


def store_now_us(conn: Connection, local_now_us: int) -> int:
    """The store's clock: PostgreSQL's, so hosts with skewed clocks agree; SQLite's is ours."""
    if conn.dialect.name == "postgresql":
        return int(conn.execute(_server_now_us).scalar_one())
    return local_now_us
