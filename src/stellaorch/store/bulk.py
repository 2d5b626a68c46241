"""Bulk writes for hot paths: compile a statement once per dialect, hand rows to the driver.

SQLAlchemy's per-row parameter processing dominates large executemany batches (ledger
entries, step rows); the compiled SQL is the same every time, so the driver gets it directly.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_compiled: dict[tuple[str, Hashable], tuple[str, tuple[str, ...] | None]] = {}


def _prepare(
    conn: Connection, key: Hashable, stmt: ClauseElement
) -> tuple[str, tuple[str, ...] | None]:
    """SQL text and, for positional drivers, the parameter order."""
    cache_key = (conn.dialect.name, key)
    hit = _compiled.get(cache_key)
    if hit is None:
        compiled = cast(SQLCompiler, stmt.compile(dialect=conn.dialect))
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        hit = (str(compiled), order)
        _compiled[cache_key] = hit
    return hit


def execute_many(
    conn: Connection, key: Hashable, stmt: ClauseElement, rows: Sequence[dict[str, Any]]
) -> None:
    """Run `stmt` once per row; `key` names the statement's shape for the compile cache."""
    if not rows:
        return
    sql, order = _prepare(conn, key, stmt)
    if order is not None:
        conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])
    else:
        conn.exec_driver_sql(sql, list(rows))


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, grouped by the columns they carry."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for cols, group in shapes.items():
        # inline: no RETURNING of generated keys (PostgreSQL would add one per row)
        stmt = table.insert().inline().values({c: bindparam(c) for c in cols})
        execute_many(conn, ("insert", table.name, cols), stmt, group)
