"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Insert, Select, Table
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
