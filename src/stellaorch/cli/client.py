"""The HTTP client of the API: where it is, who calls, and errors turned into product errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx

from stellaorch.cli.errors import ApiUnreachable, RemoteError, SettingsInvalid

BASE_PATH = "/api/v1/orchestrator"
Params = Mapping[str, str | int | None]


@dataclass(frozen=True)
class ApiTarget:
    """Which API to call, with which token, for which tenant."""

    url: str
    token: str | None
    tenant: str
    timeout_seconds: float = 30.0

    @property
    def base_url(self) -> str:
        """The API's base URL; `--api-url` may be given with or without the base path."""
        url = self.url.rstrip("/")
        return url if url.endswith(BASE_PATH) else url + BASE_PATH

    def headers(self) -> dict[str, str]:
        """Authorization and tenant headers sent with every request."""
        headers = {"X-Stella-Tenant": self.tenant}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def websocket_url(self, path: str, params: Params) -> str:
        """The ws:// (or wss://) URL of a stream route with its query."""
        base = self.base_url
        scheme, _, rest = base.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        query = urlencode(_clean(params))
        return f"{ws_scheme}://{rest}{path}" + (f"?{query}" if query else "")


def _clean(params: Params) -> dict[str, str | int]:
    """Query parameters without the ones not given."""
    return {k: v for k, v in params.items() if v is not None}


class ApiClient:
    """JSON requests against the API; every failure leaves as a StellaError subclass."""

    def __init__(self, target: ApiTarget) -> None:
        self.target = target
        try:
            self._http = httpx.AsyncClient(
                base_url=target.base_url,
                headers=target.headers(),
                timeout=target.timeout_seconds,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise SettingsInvalid(f"--api-url {target.url!r} is not a usable URL: {exc}") from None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: Params | None = None) -> Any:
        """GET a JSON document."""
        return await self._send("GET", path, params=params)

    async def post(
        self, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """POST a JSON body (or none) and return the JSON answer."""
        return await self._send("POST", path, body=body, headers=headers)

    async def post_bytes(
        self, path: str, content: bytes, media_type: str, headers: Mapping[str, str]
    ) -> Any:
        """POST raw bytes (a bundle archive) and return the JSON answer."""
        with self._translated():
            all_headers = {**headers, "Content-Type": media_type}
            response = await self._http.post(path, content=content, headers=all_headers)
        if response.is_error:
            raise error_from_response(response, self.target)
        return response.json() if response.content else None

    async def put(
        self, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """PUT a JSON body and return the JSON answer."""
        return await self._send("PUT", path, body=body, headers=headers)

    async def delete(self, path: str, headers: Mapping[str, str] | None = None) -> Any:
        """DELETE a resource and return the JSON answer (if any)."""
        return await self._send("DELETE", path, headers=headers)

    async def pages(
        self, path: str, params: Params, *, every_page: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """List responses: the first page, or every page following `nextPageToken`."""
        query = dict(params)
        while True:
            page = await self.get(path, query)
            yield page
            token = page.get("nextPageToken")
            if not every_page or not token:
                return
            query["page_token"] = token

    @asynccontextmanager
    async def download(
        self, path: str, params: Params, *, read_timeout: float | None = -1.0
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET whose body is read chunk by chunk, never all at once.

        `read_timeout` None: wait for each next chunk as long as it takes (a live log may be
        quiet for minutes); the default keeps the client's timeout.
        """
        timeout = self._http.timeout
        if read_timeout is None or read_timeout >= 0:
            timeout = httpx.Timeout(timeout.connect, read=read_timeout)
        with self._translated():
            request = self._http.build_request("GET", path, params=_clean(params), timeout=timeout)
            response = await self._http.send(request, stream=True)
            try:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response, self.target)
                yield response
            finally:
                await response.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        with self._translated():
            response = await self._http.request(
                method, path, params=_clean(params or {}), json=body, headers=headers
            )
        if response.is_error:
            raise error_from_response(response, self.target)
        return response.json() if response.content else None

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """httpx's transport errors as ApiUnreachable, naming the URL (exit 10)."""
        where = self.target.base_url
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(f"no answer from the API at {where} in time ({exc!r})") from exc
        except httpx.UnsupportedProtocol as exc:
            raise SettingsInvalid(f"--api-url {self.target.url!r}: {exc}") from None
        except httpx.ConnectError as exc:
            raise ApiUnreachable(
                f"cannot connect to the API at {where}: {exc}; is `stella orch serve` running?"
            ) from exc
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"the connection to {where} failed: {exc!r}") from exc


def error_from_response(response: httpx.Response, target: ApiTarget) -> RemoteError:
    """The error envelope of a response as a RemoteError (a bare status if there is none)."""
    status = response.status_code
    error = _envelope(response.content)
    code = str(error.get("code") or f"HTTP_{status}")
    message = str(error.get("message") or response.reason_phrase or "request failed")
    if status == 401 and not target.token:
        message += " (no token given: pass --token or set STELLA_TOKEN; see `stella orch token`)"
    elif status == 401 and "expired" in message:
        message += (
            " (tokens last 1 h unless issued with --ttl: get a new one with "
            "`stella orch token issue --tenant T --scope S [--ttl 12h]` and set STELLA_TOKEN)"
        )
    details = error.get("details")
    return RemoteError(
        status,
        code,
        message,
        trace_id=str(error.get("traceId") or "") or _trace_of(response.headers),
        details=details if isinstance(details, dict) else None,
    )


def error_from_body(status: int, body: bytes, target: ApiTarget) -> RemoteError:
    """The RemoteError of a rejected WebSocket handshake (status and body only)."""
    return error_from_response(httpx.Response(status, content=body), target)


def _envelope(content: bytes) -> dict[str, Any]:
    """`error` of `{"error": {...}}`, or an empty dict when the body is something else."""
    try:
        document = json.loads(content)
    except ValueError:
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def _trace_of(headers: httpx.Headers) -> str | None:
    """The trace id echoed in `traceparent`, read by the W3C propagator (None: absent or bad)."""
    echoed = headers.get("traceparent")
    if not echoed:
        return None
    # Imported here: only an error answer needs it, and the CLI starts faster without it.
    from opentelemetry import trace

    from stellaorch.observability.tracing import extract

    span = trace.get_current_span(extract({"traceparent": echoed})).get_span_context()
    return f"{span.trace_id:032x}" if span.is_valid else None
