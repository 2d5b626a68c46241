"""Schema migrations with Alembic, run programmatically (`stella orch db upgrade`)."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from stellaorch.store.database import StoreOptions, make_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to `engine`, with no ini file needed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision`; safe to repeat."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest revision this code ships."""
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def create_sqlite_file(path: Path, busy_timeout_ms: int = 10_000) -> bool:
    """Make a new SQLite store at `path` atomically; False when another process made it first.

    The schema is built in a hidden file beside `path` and hard-linked into place only when
    complete, so a process starting at the same moment never sees a half-made store (which it
    would rightly refuse as empty or foreign), and a crash mid-way leaves no file at `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        engine = make_engine(f"sqlite:///{draft}", StoreOptions(busy_timeout_ms=busy_timeout_ms))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        # Everything into the main file, so linking that one file carries it all.
        raw = sqlite3.connect(draft, isolation_level=None)
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
        _fsync(draft)
        try:
            os.link(draft, path)
        except FileExistsError:
            return False
        _fsync(path.parent)
        return True
    finally:
        for leftover in (draft, *(draft.with_name(draft.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
