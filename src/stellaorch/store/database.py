"""The store handle: a SQLAlchemy engine, one transaction per unit of work, off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from stellaorch.domain.errors import StoreUnavailable

T = TypeVar("T")


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
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(url: str, *, busy_timeout_ms: int = 10_000) -> Engine:
    """Create the engine for a database URL (sqlite:/// or postgresql://)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout_ms)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


class Database:
    """Runs units of work, each in one transaction, on a dedicated thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # One thread: SQLite has one writer anyway, and it keeps commits in submission order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stella-db")

    @classmethod
    def open(cls, url: str, *, busy_timeout_ms: int = 10_000) -> Database:
        """Open the database at `url` (no schema changes; see `upgrade`)."""
        return cls(make_engine(url, busy_timeout_ms=busy_timeout_ms))

    @property
    def dialect(self) -> str:
        """The SQL dialect name: 'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def transact_sync(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on the calling thread."""
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {exc.orig}") from exc

    async def transact(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on the store thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transact_sync, work)

    def close(self) -> None:
        """Wait for queued work, then release connections."""
        self._executor.shutdown(wait=True)
        self.engine.dispose()
