"""Wait for a run to end (over the API: its events, or polling) and judge how it ended."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from typing import Any
from urllib.parse import quote

from stellaorch.cli.client import ApiClient
from stellaorch.cli.errors import ApiUnreachable, RemoteError, RunUnsuccessful
from stellaorch.cli.output import stderr_is_terminal
from stellaorch.cli.progress import RemoteRunProgress
from stellaorch.cli.stream import messages, open_stream, parse_event, stream_params
from stellaorch.domain.ledger import RUN_ENDED
from stellaorch.domain.status import TERMINAL_RUN, RunStatus

POLL_SECONDS = 0.5


def run_path(run_id: str, suffix: str = "") -> str:
    """`/runs/<id><suffix>` with the id escaped, so no id can reach another route."""
    return f"/runs/{quote(run_id, safe='')}{suffix}"


async def wait_for_run(client: ApiClient, run: dict[str, Any]) -> dict[str, Any]:
    """Follow `run` until it ends, with a live display on a terminal; returns its final view."""
    run_id = str(run["runId"])
    progress = RemoteRunProgress(str(run["dagId"])) if stderr_is_terminal() else None
    with progress or nullcontext():
        try:
            await _follow_stream(client, run_id, progress)
        except (ApiUnreachable, RemoteError):
            # No stream here (an older server, a proxy without WebSocket, a dropped link):
            # polling is slower but needs nothing but GET.
            await _poll(client, run_id, progress)
    view: dict[str, Any] = await client.get(run_path(run_id))
    return view


async def _follow_stream(
    client: ApiClient, run_id: str, progress: RemoteRunProgress | None
) -> None:
    """Subscribe first, then read the state: no event can fall between the two."""
    async with open_stream(client.target, stream_params(None, None, run_id, None)) as socket:
        if await _read_state(client, run_id, progress):
            return
        async for text in messages(socket):
            event = parse_event(text)
            if event is None or event.get("runId") != run_id:
                continue
            if progress is not None:
                progress.on_event(event)
            if event.get("type") in RUN_ENDED:
                return


async def _poll(client: ApiClient, run_id: str, progress: RemoteRunProgress | None) -> None:
    """GET the run until it has ended (the server is another process: nothing to await)."""
    while True:
        if await _read_state(client, run_id, progress):
            return
        await asyncio.sleep(POLL_SECONDS)


async def _read_state(client: ApiClient, run_id: str, progress: RemoteRunProgress | None) -> bool:
    """Show the run's current state; True once it has ended."""
    view = await client.get(run_path(run_id))
    if progress is not None:
        progress.show(view)
    return view.get("status") in TERMINAL_RUN


def require_completed(view: dict[str, Any]) -> None:
    """Raise RunUnsuccessful, naming the failing step's error, unless the run completed."""
    status = str(view["status"])
    if status == RunStatus.COMPLETED.value:
        return
    error = view.get("error") or {}
    cause = f": step {error.get('stepId')}: {error.get('code')}: {error.get('message')}"
    raise RunUnsuccessful(status, f"run {view['runId']} {status}" + (cause if error else ""))
