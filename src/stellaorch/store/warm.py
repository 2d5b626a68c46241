"""Warm reports: what each process refreshed at its latest `admin warm`, one row per process."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from stellaorch.store.schema import warm_reports

_w = warm_reports.c
MAX_REPORTS = 1_000  # processes reported in one answer (a fleet is far smaller)


def record_report(conn: Connection, worker_id: str, warmed: dict[str, Any], now_us: int) -> None:
    """Replace this process's report with the figures of the warm it just did."""
    conn.execute(delete(warm_reports).where(_w.worker_id == worker_id))
    row = {
        "worker_id": worker_id,
        "tenant": "*",  # processes are shared infrastructure, not one tenant's
        "warmed_json": json.dumps(warmed),
        "warmed_us": now_us,
    }
    conn.execute(insert(warm_reports).values(row))


def reports_since(conn: Connection, since_us: int) -> list[dict[str, Any]]:
    """Reports of processes that warmed at or after `since_us`, by worker id.

    Only processes that heard another's NOTIFY write reports (a sender never hears its own),
    so these are the other processes' figures.
    """
    query = (
        select(_w.worker_id, _w.warmed_json)
        .where(_w.warmed_us >= since_us)
        .order_by(_w.worker_id)
        .limit(MAX_REPORTS)
    )
    return [{"worker": worker, "warmed": json.loads(text)} for worker, text in conn.execute(query)]
