"""Hot-path statements compiled once per dialect and handed to the driver directly.

SQLAlchemy builds, caches and post-processes a statement on every `execute`; on the claim and
complete paths that costs more than SQLite takes to run it. The statements there are built
once (`Statement` takes a factory), compiled once per dialect (and per IN-list size), and
run with `exec_driver_sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

StatementSource = Executable | Callable[[Connection], Executable]
_compiled: dict[tuple[str, Hashable], tuple[str, tuple[str, ...] | None]] = {}
# (dialect, key, list sizes) -> SQL text, positional order, literal parameters
_expanded: dict[tuple[str, Hashable, tuple[tuple[str, int], ...]], _Expanded] = {}


class _Expanded:
    __slots__ = ("literals", "order", "sql")

    def __init__(self, sql: str, order: tuple[str, ...] | None, literals: dict[str, Any]):
        self.sql, self.order, self.literals = sql, order, literals


def _build(conn: Connection, source: StatementSource) -> Executable:
    return source if isinstance(source, Executable) else source(conn)


def _compile(conn: Connection, stmt: Executable) -> SQLCompiler:
    return cast(SQLCompiler, cast(ClauseElement, stmt).compile(dialect=conn.dialect))


def _prepare(
    conn: Connection, key: Hashable, stmt: StatementSource
) -> tuple[str, tuple[str, ...] | None]:
    """SQL text and, for positional drivers, the parameter order."""
    cache_key = (conn.dialect.name, key)
    hit = _compiled.get(cache_key)
    if hit is None:
        compiled = _compile(conn, _build(conn, stmt))
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        hit = (str(compiled), order)
        _compiled[cache_key] = hit
    return hit


def execute_many(
    conn: Connection, key: Hashable, stmt: StatementSource, rows: Sequence[dict[str, Any]]
) -> None:
    """Run `stmt` once per row; `key` names the statement's shape for the compile cache."""
    if not rows:
        return
    sql, order = _prepare(conn, key, stmt)
    if order is not None:
        params: Any = [tuple(row[name] for name in order) for row in rows]
    else:
        params = list(rows)
    _driver(conn, sql, params, many=True).close()


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, grouped by the columns they carry."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for cols, group in shapes.items():
        # inline: no RETURNING of generated keys (PostgreSQL would add one per row)
        stmt = _insert_of(table, cols)
        execute_many(conn, ("insert", table.name, cols), stmt, group)


def _insert_of(table: Table, cols: tuple[str, ...]) -> Callable[[Connection], Executable]:
    return lambda _conn: table.insert().inline().values({c: bindparam(c) for c in cols})


def fetch_all(
    conn: Connection, key: Hashable, stmt: StatementSource, params: Mapping[str, Any]
) -> Sequence[Any]:
    """Run a query compiled once per dialect and IN-list size; its rows, as the driver gives them.

    List-valued parameters are expanding IN lists; each is padded with its last value to the
    next power of two, so a few compiled forms serve every size. An empty list goes the
    ordinary way (SQLAlchemy renders an always-false IN for it).
    """
    cursor = _run(conn, key, stmt, params)
    if cursor is None:
        return cast(Sequence[Any], conn.execute(_build(conn, stmt), params).all())
    try:
        return cast(Sequence[Any], cursor.fetchall())
    finally:
        cursor.close()


def fetch_mappings(
    conn: Connection, key: Hashable, stmt: StatementSource, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """`fetch_all`, each row as a dict by column name."""
    cursor = _run(conn, key, stmt, params)
    if cursor is None:
        return [dict(r._mapping) for r in conn.execute(_build(conn, stmt), params)]
    try:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def execute_once(
    conn: Connection, key: Hashable, stmt: StatementSource, params: Mapping[str, Any]
) -> None:
    """Run a write statement the way `fetch_all` runs a query."""
    cursor = _run(conn, key, stmt, params)
    if cursor is None:
        conn.execute(_build(conn, stmt), params)
    else:
        cursor.close()


def _run(conn: Connection, key: Hashable, stmt: StatementSource, params: Mapping[str, Any]) -> Any:
    lists = {n: v for n, v in params.items() if isinstance(v, list)}
    if any(not v for v in lists.values()):
        return None
    padded = {n: v + [v[-1]] * (_bucket(len(v)) - len(v)) for n, v in lists.items()}
    sizes = tuple(sorted((n, len(v)) for n, v in padded.items()))
    cache_key = (conn.dialect.name, key, sizes)
    hit = _expanded.get(cache_key)
    values = {**params, **padded}
    flat = _flatten(values, lists)
    if hit is None:
        hit = _expand(conn, _build(conn, stmt), values, flat)
        if hit is None:
            return None
        _expanded[cache_key] = hit
    merged = {**hit.literals, **flat}
    if hit.order is not None:
        return _driver(conn, hit.sql, tuple(merged[n] for n in hit.order))
    return _driver(conn, hit.sql, merged)


def raw_execute(conn: Connection, sql: str, params: Any) -> Any:
    """SQL on the transaction's DBAPI cursor (returned open), errors wrapped as SQLAlchemy's."""
    return _driver(conn, sql, params)


def _driver(conn: Connection, sql: str, params: Any, *, many: bool = False) -> Any:
    """Run SQL on the transaction's own DBAPI cursor; driver errors become SQLAlchemy's.

    Below `exec_driver_sql`: SQLAlchemy's result set-up per statement cost more than the
    statement. Errors are wrapped as `execute` would (DBAPIError with the original), so the
    store's retry and translation rules see the same exceptions.
    """
    cursor = conn.connection.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        cursor.close()
        dbapi_error = conn.dialect.loaded_dbapi.Error
        raise DBAPIError.instance(sql, params, exc, dbapi_error, dialect=conn.dialect) from exc
    return cursor


def _bucket(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _flatten(values: Mapping[str, Any], lists: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as SQLAlchemy names them once IN lists are expanded (name_i, name_i_j)."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if name not in lists:
            flat[name] = value
            continue
        for i, item in enumerate(value, start=1):
            if isinstance(item, tuple):
                flat.update({f"{name}_{i}_{j}": part for j, part in enumerate(item, start=1)})
            else:
                flat[f"{name}_{i}"] = item
    return flat


def _expand(
    conn: Connection, stmt: Executable, values: Mapping[str, Any], flat: Mapping[str, Any]
) -> _Expanded | None:
    """Compile for these list sizes; None if SQLAlchemy names the expanded parameters otherwise."""
    compiled = _compile(conn, stmt)
    state = compiled.construct_expanded_state(dict(values))
    if not set(flat) <= set(state.parameters):
        return None
    literals = {k: v for k, v in state.parameters.items() if k not in flat}
    order = tuple(state.positiontup) if compiled.positional and state.positiontup else None
    if compiled.positional and order is None and state.parameters:
        return None
    return _Expanded(state.statement, order, literals)
