"""Console routes: sign-in, the views and the actions, each one a call of the API's own routes.

Every page asks the REST API in-process (ASGI) with the session's bearer token and tenant, so
the token checks, scopes and tenant rules are exactly those of the API; nothing is read around
them except the ledger verification, which runs only after the API has shown the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from stellaorch.api.auth import READ, Authenticator, ReadCaller
from stellaorch.api.state import orchestrator
from stellaorch.console.graph import run_graph
from stellaorch.console.render import PREFIX, templates
from stellaorch.console.sessions import LINK_TTL_SECONDS, Session, SessionStore
from stellaorch.domain.audit import Operator
from stellaorch.domain.errors import StellaError
from stellaorch.domain.providers import format_utc
from stellaorch.engine.records import record_audit

BASE = "/api/v1/orchestrator"
COOKIE = "stella_console"
MAX_FORM_BYTES = 256 * 1024
MAX_INPUTS_CHARS = 64 * 1024
MAX_REASON_CHARS = 2000
PAGE_SIZE = 50
MAX_DIFF_ROWS = 500  # differences and steps shown on the diff page; the API has them all
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINAL = frozenset({"completed", "failed", "cancelled", "succeeded", "skipped"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix=PREFIX, include_in_schema=False)
links_router = APIRouter(tags=["console"])


class ApiFailure(Exception):
    """The API refused or failed a call the console made for the signed-in user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Refused(Exception):
    """A console form that cannot be acted on (bad CSRF field, bad input)."""


# -- the link route of the API (for `stella orch console url`) ------------------------------
@links_router.post("/console/links", status_code=201)
async def mint_link(request: Request, caller: ReadCaller) -> dict[str, Any]:
    """A one-time console sign-in link for the caller's token and tenant (expires quickly)."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    code, expires = _store(request).mint_link(token, caller.tenant)
    return {
        "path": f"{PREFIX}/link/{code}",
        "expiresUtc": format_utc(int(expires * 1_000_000)),
        "ttlSeconds": LINK_TTL_SECONDS,
    }


# -- plumbing ------------------------------------------------------------------------------
def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


@dataclass(frozen=True)
class Signed:
    """The session behind a request and its cookie value."""

    sid: str
    session: Session


def _signed(request: Request) -> Signed | None:
    sid = request.cookies.get(COOKIE, "")
    session = _store(request).get(sid)
    return Signed(sid, session) if session else None


async def call_api(
    request: Request,
    session: Session,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    reason: str | None = None,
) -> Any:
    """Call the REST API as the signed-in user; a refusal raises ApiFailure."""
    headers = {"X-Stella-Tenant": session.tenant}
    if session.token:
        headers["Authorization"] = f"Bearer {session.token}"
    if reason is not None:
        headers["X-Stella-Operator-Reason"] = reason
    client: httpx.AsyncClient = request.app.state.console_client
    query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
    response = await client.request(
        method, f"{BASE}{path}", params=query, json=body, headers=headers
    )
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "ERROR", response.text[:200]
        raise ApiFailure(response.status_code, code, message)
    return response.json() if response.content else None


def _page(
    request: Request, name: str, signed: Signed | None, status: int = 200, **context: Any
) -> HTMLResponse:
    page = templates.get_template(f"{name}.html").render(
        request=request,
        session=signed.session if signed else None,
        view=name,
        **context,
    )
    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


console_page = _page  # the page renderer, for the console's other route modules


def signed_session(request: Request) -> Signed | None:
    """The signed-in session of a request, or None."""
    return _signed(request)


def run_list_query(
    dag_id: str | None, status: str | None, from_utc: str | None, to_utc: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The GET /runs filters of the run list and the values its form shows (one place)."""
    params = {"dagId": dag_id, "status": status, "from": from_utc, "to": to_utc}
    shown = {"dagId": dag_id, "status": status, "from_utc": from_utc, "to_utc": to_utc}
    return params, shown


def _to(path: str, **params: Any) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    url = f"{PREFIX}{path}" + (f"?{query}" if query else "")
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _to_signin() -> RedirectResponse:
    return _to("/signin")


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST, bounded in size and field count."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise Refused("the form is too large")
    fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=50, keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


async def _mutation(request: Request) -> tuple[Signed, dict[str, str]] | Response:
    """The session and form of a state-changing POST, or the refusal to send back."""
    signed = _signed(request)
    if signed is None:
        return _to_signin()
    try:
        form = await _form(request)
    except Refused as exc:
        return _page(request, "error", signed, 400, message=str(exc))
    if not signed.session.csrf_ok(form.get("csrf")):
        message = "The form's CSRF token does not match this sign-in; reload the page."
        return _page(request, "error", signed, 403, message=message)
    return signed, form


def _reason(form: dict[str, str], field: str = "reason") -> str:
    """A required reason from a form, bounded and printable ASCII (it travels in a header)."""
    text = " ".join(form.get(field, "").split())
    if not text:
        raise Refused("a reason is required")
    if len(text) > MAX_REASON_CHARS:
        raise Refused(f"the reason is longer than {MAX_REASON_CHARS} characters")
    if not text.isascii():
        raise Refused("the reason must be plain ASCII text")
    return text


async def _view(
    request: Request, name: str, path: str, params: dict[str, Any] | None = None, **extra: Any
) -> Response:
    """A read-only page over one API list: the data, or an error with a retry."""
    signed = _signed(request)
    if signed is None:
        return _to_signin()
    try:
        data = await call_api(request, signed.session, "GET", path, params=params)
    except ApiFailure as exc:
        if exc.status == 401:
            return _to_signin()
        return _page(request, name, signed, exc.status, data=None, failure=exc, **extra)
    return _page(request, name, signed, data=data, failure=None, **extra)


def _after_action(request: Request, signed: Signed, name: str, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, ApiFailure) else str(exc)
    status = exc.status if isinstance(exc, ApiFailure) else 400
    return _page(request, "error", signed, status, message=message, back=name)


# -- sign-in -------------------------------------------------------------------------------
@router.get("/")
async def home(request: Request) -> Response:
    """The run list, or the sign-in page."""
    return _to("/runs") if _signed(request) else _to_signin()


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    """The sign-in form: paste a token."""
    return _page(request, "signin", None, error=None)


def _sign_in(request: Request, token: str, tenant: str | None) -> Response:
    """Check the token and tenant as the API does, then set the session cookie."""
    auth = _auth(request)
    try:
        principal = auth.principal(token or None)
        named = sorted(principal.tenants)
        if not tenant and len(named) == 1 and named[0] != "*":
            tenant = named[0]
        chosen = auth.tenant(principal, tenant)
        if READ not in principal.scopes:
            raise Refused("the token lacks the orchestrator:read scope")
    except (StellaError, Refused) as exc:
        return _page(request, "signin", None, 401, error=str(exc))
    sid, _ = _store(request).open(token, chosen, tuple(named))
    response = _to("/runs")
    response.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
        max_age=8 * 3600,
    )
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Sign in with a pasted token (and a tenant when the token names several)."""
    try:
        form = await _form(request)
    except Refused as exc:
        return _page(request, "signin", None, 400, error=str(exc))
    token = form.get("token", "").strip()
    if len(token) > 16_384:
        return _page(request, "signin", None, 400, error="the token is too long")
    return _sign_in(request, token, form.get("tenant", "").strip() or None)


@router.get("/link/{code}")
async def link_page(request: Request, code: str) -> Response:
    """Confirm a one-time link (a GET never uses it up, so a link preview cannot)."""
    return _page(request, "link", None, code=code[:128])


@router.post("/link/{code}")
async def redeem(request: Request, code: str) -> Response:
    """Use a one-time link: sign in with the token it was minted for."""
    found = _store(request).redeem_link(code[:128])
    if found is None:
        error = "This sign-in link is unknown, used or expired; run `stella orch console url`."
        return _page(request, "signin", None, 401, error=error)
    return _sign_in(request, *found)


@router.post("/signout")
async def signout(request: Request) -> Response:
    """End the session and clear the cookie."""
    outcome = await _mutation(request)
    if isinstance(outcome, Response):
        return outcome
    signed, _ = outcome
    _store(request).close(signed.sid)
    response = _to_signin()
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.post("/tenant")
async def switch_tenant(request: Request) -> Response:
    """Act for another of the token's tenants."""
    outcome = await _mutation(request)
    if isinstance(outcome, Response):
        return outcome
    signed, form = outcome
    auth = _auth(request)
    try:
        chosen = auth.tenant(auth.principal(signed.session.token or None), form.get("tenant"))
    except StellaError as exc:
        return _page(request, "error", signed, 403, message=str(exc))
    _store(request).switch(signed.sid, chosen)
    return _to("/runs")


# -- runs ----------------------------------------------------------------------------------
@router.get("/runs")
async def runs_page(
    request: Request,
    dagId: str | None = None,  # noqa: N803 - the API's query names
    status: str | None = None,
    from_utc: str | None = None,
    to_utc: str | None = None,
    page_token: str | None = None,
) -> Response:
    """Runs of the tenant, newest first, filtered and paged like GET /runs."""
    filters, shown = run_list_query(dagId, status, from_utc, to_utc)
    params = {**filters, "page_size": PAGE_SIZE, "page_token": page_token}
    return await _view(
        request, "runs", "/runs", params, filters=shown, statuses=RUN_STATUSES, start_error=None
    )


@router.post("/runs")
async def start_run(request: Request) -> Response:
    """Start a run from the form: DAG, version, inputs JSON, optional run token."""
    outcome = await _mutation(request)
    if isinstance(outcome, Response):
        return outcome
    signed, form = outcome
    try:
        body = _start_body(form)
        run = await call_api(request, signed.session, "POST", "/runs", body=body)
    except (Refused, ApiFailure) as exc:
        return _after_action(request, signed, "runs", exc)
    return _to(f"/runs/{run['runId']}")


def _start_body(form: dict[str, str]) -> dict[str, Any]:
    """The POST /runs body of the start form; inputs must be a JSON object."""
    text = form.get("inputs", "").strip() or "{}"
    if len(text) > MAX_INPUTS_CHARS:
        raise Refused(f"inputs are longer than {MAX_INPUTS_CHARS} characters")
    try:
        inputs = json.loads(text)
    except ValueError as exc:
        raise Refused(f"inputs are not valid JSON: {exc}") from None
    if not isinstance(inputs, dict):
        raise Refused('inputs must be a JSON object, like {"day": "2026-01-01"}')
    body: dict[str, Any] = {"dagId": form.get("dagId", "").strip(), "inputs": inputs}
    if form.get("version", "").strip():
        body["version"] = form["version"].strip()
    if form.get("runToken", "").strip():
        body["runToken"] = form["runToken"].strip()
    return body


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str, verify: bool = False) -> Response:
    """One run: steps in the DAG's order with status, attempts, durations, hashes."""
    signed = _signed(request)
    if signed is None:
        return _to_signin()
    try:
        run = await call_api(request, signed.session, "GET", f"/runs/{run_id[:128]}")
    except ApiFailure as exc:
        if exc.status == 401:
            return _to_signin()
        return _page(request, "run", signed, exc.status, data=None, failure=exc, chain=None)
    chain = None
    if verify:  # the API has just shown this run to this caller for this tenant
        chain = await orchestrator(request).runs.verify(signed.session.tenant, run["runId"])
    live = run["status"] not in FINAL
    graph = await _graph(request, signed.session, run)
    return _page(
        request, "run", signed, data=run, failure=None, chain=chain, live=live, graph=graph
    )


async def _graph(request: Request, session: Session, run: dict[str, Any]) -> Markup | None:
    """The run's DAG as inline SVG, or None when the API does not show its version."""
    path = f"/dags/{quote(str(run['dagId']), safe='')}/{quote(str(run['dagVersion']), safe='')}"
    try:
        version = await call_api(request, session, "GET", path)
    except ApiFailure:
        return None
    # run_graph escapes every text and attribute it writes, so its output is markup.
    return Markup(run_graph(run, version.get("spec") or {}))  # noqa: S704


graph_markup = _graph  # the run page's graph, for its live fragment


@router.get("/runs/{run_id}/diff")
async def diff_form(
    request: Request, run_id: str, other: Annotated[str, Query(alias="with")] = ""
) -> Response:
    """The run page's compare form (`?with=<run id>`): on to the diff of the two runs."""
    other = other.strip()[:128]
    if not other:
        return _to(f"/runs/{quote(run_id[:128], safe='')}")
    return _to(f"/runs/{quote(run_id[:128], safe='')}/diff/{quote(other, safe='')}")


@router.get("/runs/{run_id}/diff/{other_id}")
async def diff_page(request: Request, run_id: str, other_id: str) -> Response:
    """Two runs side by side: what differs, as `stella orch run diff` shows it."""
    path = f"/runs/{quote(run_id[:128], safe='')}/diff/{quote(other_id[:128], safe='')}"
    return await _view(request, "diff", path, max_rows=MAX_DIFF_ROWS)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(request: Request, run_id: str) -> Response:
    """Cancel a run after a confirmation; the rationale goes to the run and the audit log."""
    outcome = await _mutation(request)
    if isinstance(outcome, Response):
        return outcome
    signed, form = outcome
    try:
        if form.get("confirm") != "yes":
            raise Refused("tick the confirmation to cancel the run")
        rationale = _reason(form, "rationale")
        result = await call_api(
            request,
            signed.session,
            "POST",
            f"/runs/{run_id[:128]}:cancel",
            body={"reason": rationale},
        )
    except (Refused, ApiFailure) as exc:
        return _after_action(request, signed, "runs", exc)
    if not result.get("cancelRejected"):
        await _audit_cancel(request, signed.session, result["runId"], rationale)
    return _to(f"/runs/{result['runId']}")


async def _audit_cancel(request: Request, session: Session, run_id: str, rationale: str) -> None:
    """Record the console's cancel with its rationale (the API's single cancel keeps none)."""
    auth = _auth(request)
    actor = auth.principal(session.token or None).subject
    entry = Operator(actor, rationale).entry(
        session.tenant, "run.cancel", f"run:{run_id}", {"via": "console"}
    )
    env = orchestrator(request).env
    await env.db.transact(lambda c: record_audit(c, entry, env.clock.now_us()))


# -- DAGs, queues, schedules, dead letter, audit -------------------------------------------
@router.get("/dags")
async def dags_page(request: Request, page_token: str | None = None) -> Response:
    """The DAG catalog: versions, signer, enabled state."""
    params = {"page_size": 100, "page_token": page_token}
    return await _view(request, "dags", "/dags", params)


@router.post("/dags/{dag_id}/{version}/{action}")
async def dag_action(request: Request, dag_id: str, version: str, action: str) -> Response:
    """Enable or disable a DAG version, with a reason."""
    return await _admin_action(
        request, "dags", action, ("enable", "disable"), f"/dags/{dag_id}/{version}:{action}"
    )


@router.get("/queues")
async def queues_page(request: Request) -> Response:
    """Queue health of the tenant: depth, oldest age, in flight, retrying, workers."""
    return await _view(request, "queues", "/queues")


@router.post("/queues/{action}")
async def queue_action(request: Request, action: str) -> Response:
    """Pause, resume or drain the tenant's queue, with a reason."""
    signed = _signed(request)
    tenant = signed.session.tenant if signed else "-"
    return await _admin_action(
        request, "queues", action, ("pause", "resume", "drain"), f"/queues/{tenant}:{action}"
    )


@router.get("/schedules")
async def schedules_page(request: Request, page_token: str | None = None) -> Response:
    """Schedules with their next fire times."""
    params = {"page_size": 100, "page_token": page_token}
    return await _view(request, "schedules", "/schedules", params)


@router.post("/schedules/{schedule_id}/{action}")
async def schedule_action(request: Request, schedule_id: str, action: str) -> Response:
    """Pause, resume or clear a schedule, with a reason."""
    path = f"/schedules/{schedule_id[:128]}:{action}"
    return await _admin_action(request, "schedules", action, ("pause", "resume", "clear"), path)


@router.get("/deadletter")
async def deadletter_page(request: Request, page_token: str | None = None) -> Response:
    """Failed steps grouped by error code."""
    return await _view(request, "deadletter", "/deadletter", {"page_token": page_token})


@router.post("/deadletter/{code}/replay")
async def deadletter_replay(request: Request, code: str) -> Response:
    """Replay a dead-letter group, with a reason."""
    outcome = await _mutation(request)
    if isinstance(outcome, Response):
        return outcome
    signed, form = outcome
    try:
        reason = _reason(form)
        await call_api(
            request,
            signed.session,
            "POST",
            f"/deadletter/{code[:128]}:replay",
            body={"reason": reason},
            reason=reason,
        )
    except (Refused, ApiFailure) as exc:
        return _after_action(request, signed, "deadletter", exc)
    return _to("/runs")


@router.get("/audit")
async def audit_page(
    request: Request, action: str | None = None, page_token: str | None = None
) -> Response:
    """The tenant's audit log (admin readers)."""
    params = {"page_size": PAGE_SIZE, "page_token": page_token, "action": action}
    return await _view(request, "audit", "/audit", params, action=action)


async def _admin_action(
    request: Request, back: str, action: str, allowed: tuple[str, ...], path: str
) -> Response:
    """A POST of an admin change through the API with the form's reason, then the view."""
    outcome = await _mutation(request)
    if isinstance(outcome, Response):
        return outcome
    signed, form = outcome
    try:
        if action not in allowed:
            raise Refused(f"unknown action {action[:32]!r}")
        reason = _reason(form)
        await call_api(request, signed.session, "POST", path, reason=reason)
    except (Refused, ApiFailure) as exc:
        return _after_action(request, signed, back, exc)
    return _to(f"/{back}")
