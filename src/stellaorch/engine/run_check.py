"""Verify one stored run: its hash chain, its rows against the chain, its content against hashes.

A hash chain alone proves only that the entries were not edited one by one; the rows that
reads serve (`runs`, `step_executions`) and the content stored by hash (outputs, log blobs)
could still be changed beside it. This check ties all three to the chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from stellaorch.domain.ledger import ChainReport, verify_chain
from stellaorch.domain.projection import state_problem
from stellaorch.engine.views import run_view
from stellaorch.store import Connection, blobs, ledger
from stellaorch.store.export import read_attempts_of, read_steps_of
from stellaorch.store.runs import RunState


def check_run(conn: Connection, run: RunState) -> ChainReport:
    """The first problem of the run's chain, state or content, in that order (ok if none)."""
    entries = list(ledger.read_entries(conn, run.tenant, run.run_id))
    report = verify_chain(run.run_id, entries, run.ledger_head)
    if not report.ok:
        return report
    steps = read_steps_of(conn, run.tenant, [run.run_id])
    tries = read_attempts_of(conn, run.tenant, [run.run_id])
    view = run_view(run, steps, tries, whole=True)
    problem = state_problem(view, [json.loads(e.body) for e in entries])
    if problem is not None:
        return _failed(report, problem, "state")
    problem = _logs_problem(conn, run, [*steps, *tries])
    if problem is not None:
        return _failed(report, problem, "content")
    return report


def _failed(report: ChainReport, reason: str, check: str) -> ChainReport:
    return ChainReport(report.run_id, False, report.count, report.head, None, reason, check)


def _logs_problem(conn: Connection, run: RunState, rows: Iterable[dict[str, Any]]) -> str | None:
    """Every log a step or attempt refers to must exist and hash to its reference."""
    for ref in sorted({str(r["logs_ref"]) for r in rows if r.get("logs_ref")}):
        blob = blobs.get_blob(conn, run.tenant, ref)
        if blob is None:
            return f"run {run.run_id}: log {ref} is missing"
        if blobs.blob_ref(blob[0]) != ref:
            return f"run {run.run_id}: log {ref} does not match its hash"
    return None
