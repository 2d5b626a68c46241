"""The store handle: a SQLAlchemy engine, one transaction per unit of work, off the event loop.

SQLite (embedded) and PostgreSQL (scale-out) differ here in three ways only: how connections
are made (SQLite pragmas and BEGIN IMMEDIATE; a PostgreSQL pool with timeouts), how many
transactions run at once (one on SQLite, a few on PostgreSQL), and which driver errors mean
"retry the unit of work" (PostgreSQL's deadlock, serialisation and unique-race failures).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from stellaorch.domain.errors import (
    StoreCorrupt,
    StoreNotWritable,
    StoreUnavailable,
    ValidationError,
)
from stellaorch.store import bulk
from stellaorch.store.notify import SENDER_KEY
from stellaorch.store.retries import retry_conflicts

T = TypeVar("T")
log = logging.getLogger("stellaorch.store")
_AFTER_COMMIT = "stella.after_commit"


def after_commit(conn: Connection, hook: Callable[[], None]) -> None:
    """Call `hook` once the transaction `conn` is in has committed (never on a rollback)."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(hook)


def _pop_hooks(conn: Connection) -> list[Callable[[], None]]:
    """Take the transaction's after-commit hooks off its connection.

    A connection the server dropped is invalidated, and reading its `info` then raises
    PendingRollbackError, which would hide the real error (a store that went away, retried
    by the callers) behind one nobody retries. Its pooled connection, hooks and all, is
    discarded anyway.
    """
    if conn.invalidated:
        return []
    try:
        hooks: list[Callable[[], None]] = conn.info.pop(_AFTER_COMMIT, [])
    except PendingRollbackError:
        return []
    return hooks


# SQLSTATEs after which PostgreSQL rolled the transaction back and running it again is right:
# deadlock_detected and serialization_failure (a competing transaction won), unique_violation
# (two transactions inserted the same key, e.g. one runToken; the retry sees the winner's row).
RETRY_SQLSTATES = frozenset({"40P01", "40001", "23505"})
CONFLICT_RETRIES = 3
# Driver errors that say the store's file is damaged (SQLite error names).
CORRUPT_SQLITE = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
# ... and that the store answers but cannot take a write: SQLite's full disk, read-only file
# and I/O errors; PostgreSQL's disk_full, insufficient_resources, read-only transaction.
UNWRITABLE_SQLITE = frozenset({"SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR"})
UNWRITABLE_SQLSTATES = frozenset({"53100", "53000", "25006"})
READ_THREADS = 2  # threads (and connections) for read-only units of work


@dataclass(frozen=True)
class StoreOptions:
    """Connection tuning; every field but `busy_timeout_ms` applies to PostgreSQL only."""

    busy_timeout_ms: int = 10_000  # SQLite: how long a transaction waits for the write lock
    threads: int = 4  # transactions in flight at once
    pool_size: int = 5
    max_overflow: int = 5
    statement_timeout_ms: int = 30_000  # 0: no limit
    connect_timeout_seconds: int = 5


CACHE_KIB = 32 * 1024  # per SQLite connection


def _sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    """SQLite in WAL mode; every transaction starts IMMEDIATE so writers never deadlock."""
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against process crashes (kill -9), not power loss.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # A 10,000-step run writes ~30 MB of rows, far past SQLite's 2 MiB default page
        # cache: its hot pages should not have to come back from the OS on every transition.
        cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (no deadlocking lock upgrades); readers don't,
        # so in WAL mode they never wait for a writer.
        read_only = conn.get_execution_options().get("stella_read_only", False)
        # On the driver's cursor: this runs once per transaction, and SQLAlchemy's statement
        # machinery (events, contexts) cost more than the BEGIN itself.
        cursor = bulk.raw_execute(conn, "BEGIN" if read_only else "BEGIN IMMEDIATE", ())
        cursor.close()

    return engine


def postgresql_url(url: str) -> URL:
    """A postgresql:// URL bound to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _postgresql_engine(url: str, options: StoreOptions) -> Engine:
    """A pooled psycopg 3 engine; stale connections are replaced before use (pre-ping)."""
    parsed = postgresql_url(url)
    # libpq `options` from the URL (e.g. a search_path) are kept, the timeout is appended.
    server_options = str(parsed.query.get("options", ""))
    if options.statement_timeout_ms:
        server_options += f" -c statement_timeout={int(options.statement_timeout_ms)}"
    return create_engine(
        parsed,
        # every store thread (writers and readers) can hold a connection at once
        pool_size=max(options.pool_size, options.threads + READ_THREADS),
        max_overflow=options.max_overflow,
        pool_pre_ping=True,
        pool_timeout=options.connect_timeout_seconds * 2,
        connect_args={
            "options": server_options.strip(),
            "connect_timeout": options.connect_timeout_seconds,
            "application_name": "stella-orchestrator",
        },
    )


def make_engine(url: str, options: StoreOptions | None = None) -> Engine:
    """Create the engine for a database URL (sqlite:/// or postgresql://)."""
    options = options or StoreOptions()
    if url.startswith("sqlite"):
        return _sqlite_engine(url, options.busy_timeout_ms)
    return _postgresql_engine(url, options)


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def is_retryable_conflict(exc: BaseException) -> bool:
    """True for errors after which the whole unit of work should simply run again."""
    return isinstance(exc, DBAPIError) and _sqlstate(exc) in RETRY_SQLSTATES


def _log_conflict(exc: BaseException, _delay: float) -> None:
    """A unit of work lost a race and runs again (counted by the replica tests)."""
    sqlstate = _sqlstate(exc) if isinstance(exc, DBAPIError) else None
    log.info("store.conflict_retry", extra={"sqlstate": sqlstate})


def _sqlite_error(exc: DBAPIError) -> str:
    """SQLite's primary error name (SQLITE_IOERR for SQLITE_IOERR_WRITE), '' for others."""
    name = str(getattr(exc.orig, "sqlite_errorname", ""))
    return "_".join(name.split("_")[:2])


def _translated(exc: DBAPIError) -> Exception:
    """The product error for a driver error (the driver error itself when it is a bug)."""
    if _sqlite_error(exc) in CORRUPT_SQLITE:
        return StoreCorrupt(f"the store's file is damaged: {exc.orig}")
    if _sqlite_error(exc) in UNWRITABLE_SQLITE or _sqlstate(exc) in UNWRITABLE_SQLSTATES:
        return StoreNotWritable(f"the store cannot take writes: {exc.orig}")
    if isinstance(exc, DataError):
        # e.g. a NUL character or an over-long key: PostgreSQL refuses what SQLite would keep
        return ValidationError(f"a value cannot be stored: {exc.orig}")
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return StoreUnavailable(f"store unavailable: {exc.orig}")
    return exc


def _read_only(engine: Engine) -> Engine:
    """The engine for read-only units of work: each sees one snapshot, as on SQLite.

    PostgreSQL's default READ COMMITTED takes a new snapshot per statement, so a run read
    before its steps could be older than them; REPEATABLE READ READ ONLY transactions read one
    snapshot and never fail with serialisation errors (only writers can).
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return engine.execution_options(stella_read_only=True)


class Database:
    """Runs units of work, each in one transaction, on the store's own threads."""

    def __init__(self, engine: Engine, *, threads: int = 1) -> None:
        self.engine = engine
        # Marks this Database's NOTIFYs, so its own listener can tell them from others'.
        self.notify_token = secrets.token_hex(8)
        event.listen(engine, "connect", self._mark_connection)
        # SQLite: one thread. It has one writer anyway, and one thread keeps commits in
        # submission order. PostgreSQL runs transactions concurrently and orders by locks.
        workers = threads if engine.dialect.name == "postgresql" else 1
        self.threads = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stella-db")
        # Reads get their own threads and connections: in WAL mode (and on PostgreSQL) they
        # run beside the writer instead of queueing behind claims and completions.
        self._reader = _read_only(engine)
        self._read_executor = ThreadPoolExecutor(
            max_workers=READ_THREADS, thread_name_prefix="stella-read"
        )

    def _mark_connection(self, _dbapi_conn: Any, record: Any) -> None:
        record.info[SENDER_KEY] = self.notify_token

    @classmethod
    def open(cls, url: str, options: StoreOptions | None = None) -> Database:
        """Open the database at `url` (no schema changes; see `upgrade`)."""
        options = options or StoreOptions()
        return cls(make_engine(url, options), threads=options.threads)

    @property
    def dialect(self) -> str:
        """The SQL dialect name: 'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def transact_sync(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on the calling thread.

        A unit of work that lost a race on PostgreSQL (deadlock, serialisation failure, or a
        unique key another transaction inserted first) is rolled back and run again, so it
        sees the winner's rows; `work` must therefore depend only on what it reads.
        """
        try:
            return retry_conflicts(
                partial(self._transaction, work),
                retryable=is_retryable_conflict,
                retries=CONFLICT_RETRIES,
                on_retry=_log_conflict,
            )
        except PoolTimeout as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from exc
        except DBAPIError as exc:
            raise _translated(exc) from exc

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            try:
                result = work(conn)
            finally:
                # `info` outlives the transaction (it is the pooled connection's): never leak
                # a rolled-back transaction's hooks into the next one.
                hooks = _pop_hooks(conn)
        for hook in hooks:  # reached only once the commit succeeded
            try:
                hook()
            except Exception:
                log.exception("store.after_commit_failed")
        return result

    async def transact(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on a store thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transact_sync, work)

    def read_sync(self, work: Callable[[Connection], T]) -> T:
        """Run read-only `work` in one read transaction on the calling thread."""
        try:
            with self._reader.begin() as conn:
                return work(conn)
        except PoolTimeout as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from exc
        except DBAPIError as exc:
            raise _translated(exc) from exc

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run read-only `work` on a reader thread (it must not write) and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_executor, self.read_sync, work)

    def close(self) -> None:
        """Wait for queued work, then release connections."""
        self._read_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self.engine.dispose()
