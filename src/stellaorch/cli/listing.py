"""Printing list responses: one page, or every page with `--all`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stellaorch.cli.client import ApiClient, Params
from stellaorch.cli.output import warn
from stellaorch.cli.render import OutputFormat, Printer


@dataclass(frozen=True)
class Paging:
    """The paging flags of a list command."""

    page_size: int | None = None
    page_token: str | None = None
    every_page: bool = False

    def params(self) -> dict[str, str | int | None]:
        """Query parameters of the first request."""
        return {"page_size": self.page_size, "page_token": self.page_token}


async def print_pages(
    client: ApiClient, printer: Printer, kind: str, path: str, params: Params, paging: Paging
) -> None:
    """Print a list; NDJSON streams page by page, JSON and tables print once at the end."""
    query = {**params, **paging.params()}
    if printer.fmt is OutputFormat.NDJSON:
        async for page in client.pages(path, query, every_page=paging.every_page):
            printer.listing(kind, page)
            _hint_more(kind, page, paging)
        return
    items: list[Any] = []
    last: dict[str, Any] = {}
    async for last in client.pages(path, query, every_page=paging.every_page):
        items += last.get("items") or []
    printer.listing(kind, {"items": items, "nextPageToken": last.get("nextPageToken")})
    if printer.fmt is OutputFormat.TABLE:
        _hint_more(kind, last, paging)


def _hint_more(kind: str, page: dict[str, Any], paging: Paging) -> None:
    """Tell a person (on stderr) how to get the next page; JSON carries the token itself."""
    token = page.get("nextPageToken")
    if token and not paging.every_page:
        warn(f"more {kind}s: repeat with --page-token {token} (or --all for every page)")
