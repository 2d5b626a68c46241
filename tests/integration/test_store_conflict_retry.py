"""A unit of work that loses a race runs again (PostgreSQL's conflicts), on both stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from stellaorch.domain.errors import StoreUnavailable
from stellaorch.store.database import CONFLICT_RETRIES, Database, after_commit


class DriverError(Exception):
    """A driver exception carrying a SQLSTATE, as psycopg's do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.fixture
def db(new_store_url: Callable[[], str]) -> Iterator[Database]:
    database = Database.open(new_store_url())
    yield database
    database.close()


def conflicting(
    times: int, sqlstate: str = "40001"
) -> tuple[list[int], Callable[[Connection], int]]:
    """A unit of work that fails `times` times with `sqlstate`, then reads 1."""
    tries: list[int] = []

    def work(conn: Connection) -> int:
        tries.append(1)
        if len(tries) <= times:
            raise DBAPIError("SELECT 1", {}, DriverError(sqlstate))
        return int(conn.execute(text("SELECT 1")).scalar_one())

    return tries, work


def test_a_serialisation_failure_that_goes_away_commits_on_a_retry(db: Database) -> None:
    tries, work = conflicting(CONFLICT_RETRIES)

    assert db.transact_sync(work) == 1
    assert len(tries) == CONFLICT_RETRIES + 1


def test_a_conflict_that_stays_is_raised_after_the_retries(db: Database) -> None:
    tries, work = conflicting(100, "40P01")

    with pytest.raises(DBAPIError, match="40P01"):
        db.transact_sync(work)
    assert len(tries) == CONFLICT_RETRIES + 1


def test_a_driver_error_that_is_no_conflict_is_not_retried(db: Database) -> None:
    tries, work = conflicting(100, "42P01")  # undefined_table: a bug, not a race

    with pytest.raises(DBAPIError, match="42P01"):
        db.transact_sync(work)
    assert tries == [1]


def test_a_connection_the_server_dropped_surfaces_as_store_unavailable(db: Database) -> None:
    """Not as PendingRollbackError: the after-commit bookkeeping must not hide the real error."""
    ran: list[int] = []

    def work(conn: Connection) -> int:
        after_commit(conn, lambda: ran.append(1))
        conn.invalidate()  # what SQLAlchemy does when the server closed the connection
        raise DBAPIError("SELECT 1", {}, DriverError("08006"), connection_invalidated=True)

    with pytest.raises(StoreUnavailable):
        db.transact_sync(work)
    assert ran == []
    assert db.transact_sync(lambda c: int(c.execute(text("SELECT 1")).scalar_one())) == 1
