"""Console downloads: a step's log, a stored artifact and a run's ledger, as attachments.

Each download is a call of the REST API with the session's token and tenant (so the API's
scopes and tenant rules decide), answered as `Content-Disposition: attachment` with
`nosniff` and a sandboxing CSP, so a browser saves the bytes and never renders them.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from stellaorch.console.render import ARTIFACT_REF, PREFIX
from stellaorch.console.sessions import Session
from stellaorch.console.web import ApiFailure, call_api, console_page, signed_session

router = APIRouter(prefix=PREFIX, include_in_schema=False)
MAX_ID_CHARS = 128
EXPORT_PAGE = 500  # ledger entries per API page while streaming the export
MAX_EXPORT_PAGES = 400  # 200,000 entries: far above any run's ledger, still a bound
# Stored media types a download keeps; anything else (HTML, SVG, XML, …) goes out as bytes.
SAFE_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/octet-stream",
        "application/gzip",
        "application/pdf",
        "text/plain",
        "text/csv",
        "image/png",
        "image/jpeg",
    }
)
DOWNLOAD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def filename(*parts: str) -> str:
    """A safe download name from ids: letters, digits, `.`, `-`, `_` only, bounded."""
    joined = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts if p)
    return joined.strip("._")[:150] or "download"


def attachment(name: str) -> dict[str, str]:
    """The headers of a download saved as `name` (already safe)."""
    return {**DOWNLOAD_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}


def _ids(*values: str) -> str | None:
    """The first id that is too long or empty, or None when all are usable."""
    return next((v for v in values if not v or len(v) > MAX_ID_CHARS), None)


async def _refusal(request: Request, exc: ApiFailure | None = None) -> Response:
    """The console's error page for a download that cannot be given (never the content)."""
    if exc is not None and exc.status == 401:
        return Response(status_code=303, headers={"location": f"{PREFIX}/signin"})
    status = exc.status if exc else 404
    message = exc.message if exc else "not found"
    return console_page(request, "error", signed_session(request), status, message=message)


@router.get("/runs/{run_id}/logs/{step_file}")
async def step_log(request: Request, run_id: str, step_file: str, attempt: int = 0) -> Response:
    """One step's log (all attempts, or `?attempt=N`) as a text file."""
    signed = signed_session(request)
    if signed is None:
        return Response(status_code=303, headers={"location": f"{PREFIX}/signin"})
    step_id = step_file.removesuffix(".txt")
    if _ids(run_id, step_id) is not None or not step_file.endswith(".txt") or attempt < 0:
        return await _refusal(request)
    path = f"/runs/{quote(run_id, safe='')}/steps/{quote(step_id, safe='')}/logs"
    params = {"attempt": attempt or None}
    try:
        data = await call_api(request, signed.session, "GET", path, params=params)
    except ApiFailure as exc:
        return await _refusal(request, exc)
    text = "".join(f"{item['line']}\n" for item in data.get("items") or [])
    name = filename(run_id, step_id, f"attempt{attempt}" if attempt else "") + ".txt"
    return Response(text, media_type="text/plain; charset=utf-8", headers=attachment(name))


@router.get("/artifacts/{ref}")
async def artifact(request: Request, ref: str) -> Response:
    """A stored artifact by its `sha256:` reference, as the API gives it to this tenant."""
    signed = signed_session(request)
    if signed is None:
        return Response(status_code=303, headers={"location": f"{PREFIX}/signin"})
    if not ARTIFACT_REF.fullmatch(ref):
        return await _refusal(request)
    client = request.app.state.console_client
    headers = {"X-Stella-Tenant": signed.session.tenant}
    if signed.session.token:
        headers["Authorization"] = f"Bearer {signed.session.token}"
    # The API bounds stored artifacts by max_artifact_bytes, so one response is bounded.
    response = await client.get(f"/api/v1/orchestrator/artifacts/{ref}", headers=headers)
    if response.status_code >= 400:
        return await _refusal(request, _failure(response))
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    media = media if media in SAFE_TYPES else "application/octet-stream"
    name = filename(ref.replace(":", "-")) + ".bin"
    return Response(response.content, media_type=media, headers=attachment(name))


def _failure(response: Any) -> ApiFailure:
    """The API's error envelope of a refused raw call."""
    try:
        error = response.json()["error"]
        return ApiFailure(response.status_code, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiFailure(response.status_code, "ERROR", "the API refused the download")


@router.get("/runs/{run_id}/export.ndjson")
async def run_export(request: Request, run_id: str) -> Response:
    """The run's ledger entries in chain order, one JSON object a line, page by page."""
    signed = signed_session(request)
    if signed is None:
        return Response(status_code=303, headers={"location": f"{PREFIX}/signin"})
    if _ids(run_id) is not None:
        return await _refusal(request)
    path = f"/runs/{quote(run_id, safe='')}/events"
    try:  # the first page now, so a refusal is an error page, not a cut stream
        first = await call_api(
            request, signed.session, "GET", path, params={"page_size": EXPORT_PAGE}
        )
    except ApiFailure as exc:
        return await _refusal(request, exc)
    lines = _export_lines(request, signed.session, path, first)
    name = filename(run_id, "ledger") + ".ndjson"
    return StreamingResponse(lines, media_type="application/x-ndjson", headers=attachment(name))


async def _export_lines(
    request: Request, session: Session, path: str, page: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Each page's entries as NDJSON, fetching the next page only once this one is sent."""
    for _ in range(MAX_EXPORT_PAGES):
        for entry in page.get("items") or []:
            yield json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        token = page.get("nextPageToken")
        if not token:
            return
        params = {"page_size": EXPORT_PAGE, "page_token": token}
        page = await call_api(request, session, "GET", path, params=params)
