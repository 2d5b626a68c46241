"""Leader leases: one row per role; whoever holds an unexpired row leads (SQLite and PostgreSQL).

Taking a lease is one conditional UPDATE: it succeeds for the current holder or once the
lease expired, and the database serialises two contenders on the row, so one wins.
"""

from __future__ import annotations

from sqlalchemy import Connection, or_, select, update

from stellaorch.store.dialect import insert_ignore
from stellaorch.store.schema import leader_leases

ALL_TENANTS = "*"
_l = leader_leases.c


def acquire(conn: Connection, name: str, holder: str, now_us: int, ttl_us: int) -> bool:
    """Take or renew the lease `name` until now + ttl; False while another holder has it."""
    conn.execute(
        insert_ignore(conn, leader_leases, ["name"]),
        [{"name": name, "tenant": ALL_TENANTS, "holder": holder, "expires_us": 0}],
    )
    stmt = (
        update(leader_leases)
        .where(_l.name == name, or_(_l.holder == holder, _l.expires_us <= now_us))
        .values(holder=holder, expires_us=now_us + ttl_us)
    )
    return bool(conn.execute(stmt).rowcount == 1)


def holds(conn: Connection, name: str, holder: str, now_us: int) -> bool:
    """True while `holder` has the unexpired lease `name`."""
    query = select(_l.holder, _l.expires_us).where(_l.name == name)
    row = conn.execute(query).first()
    return row is not None and row[0] == holder and int(row[1]) > now_us


def release(conn: Connection, name: str, holder: str) -> None:
    """Give the lease up at once so a standby need not wait for it to expire."""
    conn.execute(
        update(leader_leases).where(_l.name == name, _l.holder == holder).values(expires_us=0)
    )
