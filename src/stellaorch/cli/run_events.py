"""`stella orch run events`: one run's ledger entries, and with --follow the new ones as they
are written (woken by the run stream, read back from the ledger, so nothing is printed twice
or missed; polling when there is no stream)."""

from __future__ import annotations

import asyncio
from typing import Any

from stellaorch.cli.client import ApiClient
from stellaorch.cli.errors import ApiUnreachable, RemoteError
from stellaorch.cli.follow import POLL_SECONDS, run_path
from stellaorch.cli.output import say
from stellaorch.cli.render import OutputFormat, Printer, compact, table_lines
from stellaorch.cli.stream import messages, open_stream, stream_params
from stellaorch.domain.ledger import RUN_ENDED

PAGE = 500
EVENT_COLUMNS = (
    ("SEQ", "seq"),
    ("TIME", "timestamp"),
    ("TYPE", "type"),
    ("STATUS", "status"),
    ("STEP_ID", "stepId"),
    ("ATTEMPT", "attempt"),
)


class EventPrinter:
    """Prints entries as they come: a table (header once), NDJSON, or JSON at the end."""

    def __init__(self, printer: Printer) -> None:
        self.printer = printer
        self.last = 0
        self.ended = False
        self._header = True
        self._kept: list[dict[str, Any]] = []

    def add(self, entries: list[dict[str, Any]]) -> None:
        """Print (or keep, for JSON) a batch of entries in seq order."""
        if not entries:
            return
        self.last = int(entries[-1]["seq"])
        self.ended = self.ended or any(e.get("type") in RUN_ENDED for e in entries)
        fmt = self.printer.fmt
        if fmt is OutputFormat.JSON:
            self._kept += entries
        elif fmt is OutputFormat.NDJSON:
            for entry in entries:
                say(compact(entry))
        else:
            lines = table_lines(EVENT_COLUMNS, entries)
            for line in lines if self._header else lines[1:]:
                say(line)
            self._header = False

    def finish(self) -> None:
        """JSON: the whole list at once."""
        if self.printer.fmt is OutputFormat.JSON:
            self.printer.listing("event", {"items": self._kept})


async def read_new(client: ApiClient, run_id: str, out: EventPrinter) -> None:
    """Every entry after the last printed one, page by page."""
    while True:
        page = await client.get(run_path(run_id, "/events"), {"after": out.last, "page_size": PAGE})
        out.add(page.get("items") or [])
        if not page.get("nextPageToken"):
            return


async def print_events(client: ApiClient, printer: Printer, run_id: str, follow: bool) -> None:
    """The run's entries; with `follow`, keep printing new ones until the run has ended."""
    out = EventPrinter(printer)
    try:
        if follow:
            await _follow(client, run_id, out)
        else:
            await read_new(client, run_id, out)
    finally:
        out.finish()


async def _follow(client: ApiClient, run_id: str, out: EventPrinter) -> None:
    """Subscribe first, then read: an entry written in between is read, never missed."""
    try:
        async with open_stream(client.target, stream_params(None, None, run_id, None)) as socket:
            await read_new(client, run_id, out)
            if out.ended:
                return
            async for _text in messages(socket):
                await read_new(client, run_id, out)
                if out.ended:
                    return
    except (ApiUnreachable, RemoteError) as exc:
        if isinstance(exc, RemoteError) and exc.status in (401, 403, 404):
            raise
        while not out.ended:  # no stream: poll the ledger
            await read_new(client, run_id, out)
            if not out.ended:
                await asyncio.sleep(POLL_SECONDS)
