"""The parameters of an `http` step: method, URL, headers, JSON body and the response cap."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from stellaorch.plugins.base import ParamProblem, params_invalid
from stellaorch.plugins.params import static_problems, unknown_keys

HTTP_PARAMS = ("method", "url", "headers", "json", "maxResponseBytes")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024
# A response becomes outputs, which are capped at 1 MiB: leave room for status and headers.
MAX_RESPONSE_BYTES = 768 * 1024
# Headers the plugin sets itself, or that would let a step lie about the request it sends.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "traceparent"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_MAX_HEADER_VALUE = 8192


@dataclass(frozen=True)
class HttpParams:
    """Validated parameters of one `http` attempt."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    body: Any
    has_body: bool
    max_bytes: int

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> HttpParams:
        """Validate raw (resolved) parameters; anything unusable is `PARAMS_INVALID`."""
        return cls(
            method=_method(params.get("method", "GET")),
            url=_url(params.get("url")),
            headers=_headers(params.get("headers", {})),
            body=params.get("json"),
            has_body="json" in params,
            max_bytes=_max_bytes(params.get("maxResponseBytes", DEFAULT_MAX_RESPONSE_BYTES)),
        )


def check_http_params(params: Mapping[str, Any]) -> list[ParamProblem]:
    """Publish-time check: known keys, a URL, and the shape of every static field."""
    problems = unknown_keys("http", params, HTTP_PARAMS)
    if "url" not in params:
        problems.append(("url", "http: 'url' is required"))
    parsers = {"method": _method, "url": _url, "headers": _headers, "maxResponseBytes": _max_bytes}
    return problems + static_problems(params, parsers)


def _method(value: object) -> str:
    """One of `METHODS` (any case)."""
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise params_invalid(f"http: 'method' must be one of {', '.join(METHODS)}")
    return value.upper()


def _url(value: object) -> httpx.URL:
    """An absolute http(s) URL with a host and no credentials in it."""
    if not isinstance(value, str) or not value:
        raise params_invalid("http: 'url' is required and must be a string")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise params_invalid(f"http: 'url' is not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise params_invalid("http: 'url' must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise params_invalid("http: 'url' must not carry credentials; send them in 'headers'")
    return url


def _headers(value: object) -> dict[str, str]:
    """Header names (tokens, not reserved) to string values without line breaks."""
    if not isinstance(value, Mapping):
        raise params_invalid("http: 'headers' must be an object of strings")
    headers: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise params_invalid(f"http: header name {name!r} is not a valid token")
        if name.lower() in _RESERVED_HEADERS:
            raise params_invalid(f"http: header {name!r} is set by the plugin, not the step")
        if isinstance(item, bool | int | float):
            item = str(item).lower() if isinstance(item, bool) else str(item)
        if not isinstance(item, str) or any(c in item for c in "\r\n\0"):
            raise params_invalid(f"http: header {name!r} must be a string without line breaks")
        if len(item) > _MAX_HEADER_VALUE:
            raise params_invalid(f"http: header {name!r} is longer than {_MAX_HEADER_VALUE}")
        headers[name] = item
    return headers


def _max_bytes(value: object) -> int:
    """The response size cap: 1 to `MAX_RESPONSE_BYTES`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise params_invalid("http: 'maxResponseBytes' must be an integer")
    if not 1 <= value <= MAX_RESPONSE_BYTES:
        raise params_invalid(f"http: 'maxResponseBytes' must be 1 to {MAX_RESPONSE_BYTES}")
    return value
