"""The worker API over HTTP, with reconnect and backoff while the API is away."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

log = logging.getLogger("stellaorch.sdk")
BASE = "/api/v1/orchestrator"
_RETRY_STATUS = frozenset({502, 503, 504})


class ApiAway(Exception):
    """The API could not be reached, or answered that it is unavailable."""


class Refused(Exception):
    """The API refused the call (a 4xx): retrying the same call cannot help."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class TaskClient:
    """Calls of one worker for one tenant; every call is one HTTP request."""

    def __init__(self, url: str, token: str | None, tenant: str, *, timeout: float = 60.0) -> None:
        headers = {"X-Stella-Tenant": tenant}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def post(self, path: str, body: Any = None) -> dict[str, Any]:
        """POST once; ApiAway for a transport error or 502-504, Refused for a 4xx."""
        return await self._send("POST", path, json=body)

    async def put_bytes(self, path: str, content: bytes, content_type: str) -> dict[str, Any]:
        """PUT a raw body once (an artifact); errors as for `post`."""
        headers = {"Content-Type": content_type}
        return await self._send("PUT", path, content=content, headers=headers)

    async def _send(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        try:
            response = await self.http.request(method, f"{BASE}{path}", **request)
        except httpx.TransportError as exc:
            raise ApiAway(str(exc) or type(exc).__name__) from exc
        if response.status_code in _RETRY_STATUS or response.status_code >= 500:
            raise ApiAway(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            error = _error_of(response)
            raise Refused(response.status_code, error.get("code", "HTTP"), error.get("message", ""))
        data: dict[str, Any] = response.json()
        return data

    async def post_until(
        self, path: str, body: Any, stopping: asyncio.Event | None = None
    ) -> dict[str, Any] | None:
        """POST until the API takes it, backing off (0.05 s doubling to 5 s, jittered).

        Returns None if `stopping` is set while the API is away.
        """
        return await self.until(lambda: self.post(path, body), stopping)

    async def until(
        self,
        call: Callable[[], Awaitable[dict[str, Any]]],
        stopping: asyncio.Event | None = None,
    ) -> dict[str, Any] | None:
        """Make `call` until the API takes it, with the backoff of `post_until`."""
        delay = 0.05
        while True:
            try:
                return await call()
            except ApiAway as exc:
                if stopping is not None and stopping.is_set():
                    return None
                log.warning("worker API unavailable (%s), retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)


def _error_of(response: httpx.Response) -> dict[str, str]:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}
