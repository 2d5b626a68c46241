"""Is the store sound? File checks before opening, and SQLite's and PostgreSQL's integrity checks.

A store is created only where nothing exists yet. An empty file, a file that is not a SQLite
database, or a SQLite database without Stella's tables is refused, never initialised or
migrated over: the likely story behind each is a botched copy or restore, or the wrong path,
and the data the operator meant lives somewhere else.

SQLite files are checked through a read-only connection of their own, so a refused or damaged
file is never written to (the store's own connections switch the file to WAL mode on connect).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from stellaorch.domain.errors import (
    StoreCorrupt,
    StoreMissing,
    StoreNotStella,
    StoreUnavailable,
)
from stellaorch.store.schema import metadata

CheckLevel = Literal["quick", "full"]
SQLITE_HEADER = b"SQLite format 3\x00"
# A file holding these tables was made by Stella (at any schema revision).
STELLA_TABLES = frozenset({"alembic_version", "runs", "ledger_entries"})
MAX_PROBLEMS = 100  # SQLite stops listing after this many; the first few say enough
_CORRUPT_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_PG_CORRUPT_STATES = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted
MIB = 1024 * 1024


@dataclass(frozen=True)
class IntegrityReport:
    """Outcome of an integrity check: `problems` lists what the database reported, in order."""

    level: CheckLevel
    ok: bool
    problems: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        """The report as JSON."""
        return {"check": self.level, "ok": self.ok, "problems": list(self.problems)}


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (None for PostgreSQL and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def admit_file(path: Path) -> bool:
    """True when nothing is at `path` (a new store may be made there); raise for a foreign file.

    An existing file must be a SQLite database holding Stella's tables.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the store file {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise StoreCorrupt(f"the store path {path} is not a regular file")
    if size == 0:
        raise StoreCorrupt(
            f"the store file {path} is empty (0 bytes), so it is refused rather than "
            "initialised; restore it from a backup, or remove it to start an empty store"
        )
    if _header(path) != SQLITE_HEADER:
        raise StoreCorrupt(f"the store file {path} is not a SQLite database; it is left as is")
    found = _tables(path)
    if not STELLA_TABLES.issubset(found):
        raise StoreNotStella(
            f"the file {path} is a SQLite database without the Stella schema "
            f"({len(found)} other table(s)); it is never migrated over: check the database URL"
        )
    return False


def require_file(path: Path) -> None:
    """Like `admit_file`, but a missing file is an error too (checks never create a store)."""
    if admit_file(path):
        raise StoreMissing(f"no store file at {path}")


def check_file(path: Path, level: CheckLevel) -> IntegrityReport:
    """SQLite's `quick_check` or `integrity_check` of the file, on a read-only connection."""
    pragma = "quick_check" if level == "quick" else "integrity_check"
    try:
        rows = _read_only(path, f"PRAGMA {pragma}({MAX_PROBLEMS})")
    except StoreCorrupt as exc:
        return IntegrityReport(level, False, (exc.message,))
    problems = _problems(str(row[0]) for row in rows)
    return IntegrityReport(level, not problems, problems)


def check_connection(conn: Connection, level: CheckLevel) -> IntegrityReport:
    """PostgreSQL: `quick` answers a trivial select; `full` also reads every table through.

    Reading every row makes the server touch every heap page, so a page that fails its
    checksum (or cannot be read at all) surfaces as an error here rather than in a request.
    """
    conn.execute(text("SELECT 1"))
    if level == "quick":
        return IntegrityReport(level, True)
    present = set(inspect(conn).get_table_names())
    try:
        for table in metadata.sorted_tables:
            if table.name in present:
                conn.execute(select(func.count()).select_from(table))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) not in _PG_CORRUPT_STATES:
            raise
        return IntegrityReport(level, False, (str(exc.orig).strip(),))
    return IntegrityReport(level, True)


def free_disk_mb(path: Path) -> int | None:
    """Free space, in MiB, on the file system holding `path` (None when it cannot be told)."""
    try:
        return int(shutil.disk_usage(path.parent if not path.is_dir() else path).free // MIB)
    except OSError:
        return None


def _problems(rows: Iterable[str]) -> tuple[str, ...]:
    """SQLite's problem lines (it answers a single 'ok' when there are none)."""
    lines = [line.strip() for row in rows for line in row.splitlines()]
    return tuple(ln for ln in lines if ln and ln != "ok" and not ln.startswith("*** in database"))


def _header(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the store file {path}: {exc.strerror}") from exc


def _tables(path: Path) -> set[str]:
    rows = _read_only(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(row[0]) for row in rows}


def _read_only(path: Path, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on a read-only connection to the file; driver errors translated."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            return list(conn.execute(statement))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        name = str(getattr(exc, "sqlite_errorname", ""))
        if "_".join(name.split("_")[:2]) in _CORRUPT_ERRORS:
            raise StoreCorrupt(f"the store file {path} is damaged: {exc}") from exc
        raise StoreUnavailable(f"cannot read the store file {path}: {exc}") from exc
