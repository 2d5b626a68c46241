"""Access to the engine from a request (the app holds one Orchestrator)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from stellaorch.engine.app import Orchestrator


def orchestrator(conn: HTTPConnection) -> Orchestrator:
    """The engine this app serves."""
    orch: Orchestrator = conn.app.state.orchestrator
    return orch
