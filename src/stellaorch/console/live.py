"""Console fragments that keep open pages current: the run list's rows and a run's steps.

`console.js` polls them every 2 s (unless paused) and swaps the fragment in; they are the
same API calls and the same templates as the full pages, so a fragment always shows what a
reload would.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from stellaorch.console.render import PREFIX, templates
from stellaorch.console.web import (
    FINAL,
    PAGE_SIZE,
    SECURITY_HEADERS,
    ApiFailure,
    call_api,
    graph_markup,
    run_list_query,
    signed_session,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SIGNED_OUT = ApiFailure(401, "UNAUTHENTICATED", "you are signed out; reload to sign in")


def fragment(
    name: str, status: int = 200, headers: dict[str, str] | None = None, **kw: Any
) -> Response:
    """A template rendered on its own (no page around it), with the console's headers."""
    html = templates.get_template(f"{name}.html").render(**kw)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


@router.get("/runs/rows")
async def run_rows(
    request: Request,
    dagId: str | None = None,  # noqa: N803 - the API's query names
    status: str | None = None,
    from_utc: str | None = None,
    to_utc: str | None = None,
    page_token: str | None = None,
) -> Response:
    """The run list's table (or its "No data" box) for the same filters and page."""
    filters, shown = run_list_query(dagId, status, from_utc, to_utc)
    signed = signed_session(request)
    if signed is None:
        return fragment("runs_rows", 401, data=None, failure=SIGNED_OUT, filters=shown)
    params = {**filters, "page_size": PAGE_SIZE, "page_token": page_token}
    try:
        data = await call_api(request, signed.session, "GET", "/runs", params=params)
    except ApiFailure as exc:
        return fragment("runs_rows", exc.status, data=None, failure=exc, filters=shown)
    return fragment("runs_rows", data=data, failure=None, filters=shown)


@router.get("/runs/{run_id}/live")
async def run_steps(request: Request, run_id: str) -> Response:
    """A run's graph and steps; `X-Stella-Run-Final: 1` once the run has ended."""
    signed = signed_session(request)
    if signed is None:
        return fragment("run_steps", 401, data=None, failure=SIGNED_OUT, graph=None)
    try:
        run = await call_api(request, signed.session, "GET", f"/runs/{run_id[:128]}")
    except ApiFailure as exc:
        return fragment("run_steps", exc.status, data=None, failure=exc, graph=None)
    graph: Markup | None = await graph_markup(request, signed.session, run)
    final = {"X-Stella-Run-Final": "1" if run["status"] in FINAL else "0"}
    return fragment("run_steps", headers=final, data=run, failure=None, graph=graph)
