"""The `http` plugin: one HTTP call to a host on the step's `network` allowlist.

Parameters are in `http_params`. Every hop is checked against the allowlist (`host[:port]`, a
bare host meaning ports 80 and 443), redirects included: they are followed by hand, at most
`MAX_REDIRECTS`, and one that leaves the allowlist fails the attempt. The worker's proxy
variables are ignored (`trust_env=False`). The call is bounded by the step's timeout (and a
connect timeout), the response by `maxResponseBytes`, read as a stream and cut at the cap.
The request carries the attempt's `traceparent`.

Outcome: a status below 400 gives outputs `status`, `headers` (a fixed subset) and `json`
(a JSON response) or `text`; 401/403 fail with `PLUGIN_AUTH_FAILED`; other 4xx with
`HTTP_CLIENT_ERROR`, retried only for 408 and 429; 5xx (`HTTP_SERVER_ERROR`), timeouts
(`HTTP_TIMEOUT`) and connection failures (`HTTP_CONNECTION_FAILED`) are retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.base import PluginResult, StepContext, params_invalid
from stellaorch.plugins.capture import LogBuffer
from stellaorch.plugins.egress import Allowlist
from stellaorch.plugins.http_params import HttpParams

CONNECT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 5
PLUGIN_AUTH_FAILED = "PLUGIN_AUTH_FAILED"
HTTP_HOST_NOT_ALLOWED = "HTTP_HOST_NOT_ALLOWED"
HTTP_RESPONSE_TOO_LARGE = "HTTP_RESPONSE_TOO_LARGE"
# Response headers copied into the outputs (lowercase); the rest are left out.
OUTPUT_HEADERS = (
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "cache-control",
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_4XX = frozenset({408, 429})
_AUTH = frozenset({401, 403})
# Headers that must not follow a redirect to another origin.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_ERROR_BODY_LOGGED = 1024


@dataclass(frozen=True)
class _Answer:
    """The final response of a call: its status, headers and (capped) body."""

    url: httpx.URL
    status: int
    reason: str
    headers: httpx.Headers
    body: bytes


class HttpPlugin:
    """Calls an allowlisted endpoint; see the module docstring for the contract."""

    name = "http"
    version = "1"

    def __init__(self, *, max_log_bytes: int = 1024 * 1024) -> None:
        self._max_log_bytes = max_log_bytes

    async def run(self, ctx: StepContext) -> PluginResult:
        """Make the call (following allowed redirects) and judge its answer."""
        params = HttpParams.parse(ctx.params)
        allow = _allowlist(ctx.network)
        log = LogBuffer(self._max_log_bytes)
        timeout = httpx.Timeout(
            ctx.timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, ctx.timeout_seconds)
        )
        headers = {**params.headers, "traceparent": ctx.traceparent}
        try:
            async with httpx.AsyncClient(
                trust_env=False, follow_redirects=False, timeout=timeout
            ) as client:
                answer = await _call(client, params, headers, allow, log)
        except httpx.TimeoutException as exc:
            message = f"{_where(params)} timed out ({type(exc).__name__})"
            raise _failure("HTTP_TIMEOUT", message, True, log) from exc
        except httpx.TransportError as exc:
            message = f"{_where(params)} failed: {type(exc).__name__}: {exc}"
            raise _failure("HTTP_CONNECTION_FAILED", message, True, log) from exc
        return _judge(answer, log)


async def _call(
    client: httpx.AsyncClient,
    params: HttpParams,
    headers: dict[str, str],
    allow: Allowlist,
    log: LogBuffer,
) -> _Answer:
    """Send the request, following redirects by hand, each hop checked against `allow`."""
    method, url, body, has_body = params.method, params.url, params.body, params.has_body
    for _ in range(MAX_REDIRECTS + 1):
        _require_allowed(allow, url, log)
        sent = body if has_body else None
        request = client.build_request(method, url, headers=headers, json=sent)
        response = await client.send(request, stream=True)
        try:
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                log.add_line(f"{method} {_show(url)} -> {response.status_code}".encode())
                target = url.join(location)
                if _origin(target) != _origin(url):
                    headers = _without_credentials(headers)
                if response.status_code == 303 or (
                    response.status_code in (301, 302) and method == "POST"
                ):
                    method, has_body = "GET", False
                url = target
                continue
            content = await _read_capped(response, params.max_bytes, log)
        finally:
            await response.aclose()
        line = f"{method} {_show(url)} -> {response.status_code} ({len(content)} bytes)"
        log.add_line(line.encode())
        return _Answer(url, response.status_code, response.reason_phrase, response.headers, content)
    message = f"{_where(params)}: more than {MAX_REDIRECTS} redirects"
    raise _failure("HTTP_TOO_MANY_REDIRECTS", message, False, log)


def _allowlist(network: tuple[str, ...]) -> Allowlist:
    """The step's allowlist; an http step without one can reach nothing."""
    if not network:
        raise params_invalid("http: the step has no 'network' allowlist, so no host is allowed")
    try:
        return Allowlist.parse(network)
    except ValueError as exc:
        raise params_invalid(f"http: {exc}") from exc


def _require_allowed(allow: Allowlist, url: httpx.URL, log: LogBuffer) -> None:
    """Refuse a hop to a host:port that the step's `network` does not list."""
    port = url.port or (443 if url.scheme == "https" else 80)
    if not allow.allows(url.host, port):
        message = f"{url.host}:{port} is not on the step's network allowlist (at {_show(url)})"
        raise _failure(HTTP_HOST_NOT_ALLOWED, message, False, log)


async def _read_capped(response: httpx.Response, cap: int, log: LogBuffer) -> bytes:
    """The decoded body, refused as soon as it passes `cap` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(cap, log)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise _too_large(cap, log)
    return bytes(body)


def _judge(answer: _Answer, log: LogBuffer) -> PluginResult:
    """Outputs for a status below 400; the typed error of SPEC §5 otherwise."""
    status = answer.status
    if status < 400:
        return PluginResult(outputs=_outputs(answer), logs=log.text())
    snippet = answer.body[:_ERROR_BODY_LOGGED].decode("utf-8", "replace")
    log.add_line(f"response body: {snippet}".encode())
    where = f"{_show(answer.url)} answered {status} {answer.reason}".rstrip()
    if status in _AUTH:
        message = f"{where}: the endpoint refused the credentials"
        raise _failure(PLUGIN_AUTH_FAILED, message, False, log)
    if status < 500:
        raise _failure("HTTP_CLIENT_ERROR", where, status in _RETRYABLE_4XX, log)
    raise _failure("HTTP_SERVER_ERROR", where, True, log)


def _outputs(answer: _Answer) -> dict[str, Any]:
    """`status`, the kept headers, and the body as `json` (when it is JSON) or `text`."""
    headers = {name: answer.headers[name] for name in OUTPUT_HEADERS if name in answer.headers}
    outputs: dict[str, Any] = {"status": answer.status, "headers": headers}
    content_type = answer.headers.get("content-type", "").lower()
    if "json" in content_type and answer.body:
        try:
            outputs["json"] = json.loads(answer.body)
            return outputs
        except ValueError:
            pass  # a server that says JSON and sends something else: keep it as text
    outputs["text"] = answer.body.decode(_charset(content_type), "replace")
    return outputs


def _charset(content_type: str) -> str:
    """The charset a Content-Type names, if Python knows it; UTF-8 otherwise."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key == "charset" and value:
            try:
                "".encode(value.strip('"'))
                return value.strip('"')
            except LookupError:
                break
    return "utf-8"


def _without_credentials(headers: dict[str, str]) -> dict[str, str]:
    """The headers minus those that carry credentials (for a redirect to another origin)."""
    return {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a credential is bound to."""
    return (url.scheme, url.host, url.port)


def _show(url: httpx.URL) -> str:
    """The URL without its query or fragment (they may carry tokens) for logs and errors."""
    return str(url.copy_with(query=None, fragment=None))


def _where(params: HttpParams) -> str:
    """`METHOD url` of the request, for messages."""
    return f"{params.method} {_show(params.url)}"


def _too_large(cap: int, log: LogBuffer) -> StepFailed:
    """The error of a response over `maxResponseBytes`."""
    message = f"the response is larger than maxResponseBytes ({cap} bytes)"
    return _failure(HTTP_RESPONSE_TOO_LARGE, message, False, log)


def _failure(code: str, message: str, retryable: bool, log: LogBuffer) -> StepFailed:
    """A typed failure carrying the call's log."""
    return StepFailed(code, message, retryable=retryable, logs=log.text())
