"""uvicorn's h11 protocol, bounded before a request exists: header size (431) and time (408).

uvicorn's default parser (httptools) buffers a request's headers without limit, and no
parser times out a client that sends them slowly or never finishes: h11 gives the size
bound (`h11_max_incomplete_event_size`), this module adds the deadline and the answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # as uvicorn imports it
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from stellaorch.domain.errors import error_envelope

log = logging.getLogger("stellaorch.http")
# After refusing, keep reading (and dropping) this long before closing: closing a socket
# with unread input resets it, and the client would lose the answer it is owed.
LINGER_SECONDS = 1.0


class ServerConfig(uvicorn.Config):
    """uvicorn's config with the guarded protocol and the time allowed for a request's head."""

    def __init__(self, app: Any, *, header_timeout_seconds: float, **options: Any) -> None:
        super().__init__(app, http=GuardedH11Protocol, **options)
        self.header_timeout_seconds = header_timeout_seconds


class GuardedH11Protocol(H11Protocol):
    """Refuses a request head over the size bound (431) or not complete in time (408)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        timeout = getattr(config, "header_timeout_seconds", None)
        self._header_timeout: float | None = timeout
        limit = config.h11_max_incomplete_event_size
        self._max_head_bytes = limit or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    # -- uvicorn's hooks, each followed by a look at where the request head stands ------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: its first request head is due within the timeout."""
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; once refused, drop whatever else arrives."""
        if self._refused:
            return
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        """A response is out: the next request head (keep-alive) gets a fresh deadline."""
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._cancel_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request: 431 when it was for the size of the head, else uvicorn's 400."""
        buffered = len(self.conn.trailing_data[0])
        if buffered <= self._max_head_bytes:
            super().send_400_response(msg)
            return
        log.warning("http.head_too_large", extra={"client": _client(self.client)})
        limit = self._max_head_bytes
        self._refuse(431, "HEADERS_TOO_LARGE", f"request line and headers exceed {limit} bytes")

    # -- the deadline ------------------------------------------------------------------------
    def _watch_head(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._cancel_deadline()
        elif self._deadline is None and self._header_timeout is not None:
            self._deadline = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if not self.conn.trailing_data[0]:
            # an idle keep-alive connection: close it quietly, as its keep-alive timeout would
            self.transport.close()
            return
        log.warning("http.head_timeout", extra={"client": _client(self.client)})
        seconds = self._header_timeout
        self._refuse(408, "REQUEST_TIMEOUT", f"request headers not received within {seconds} s")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Send the error envelope outside h11 (it has no request to answer), then close."""
        trace_id = secrets.token_hex(16)
        body = json.dumps(error_envelope(code, message, trace_id))
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            "connection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self._refused = True
        self._cancel_deadline()
        self.transport.write(head.encode() + body.encode())
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def _client(address: tuple[str, int] | None) -> str:
    return f"{address[0]}:{address[1]}" if address else ""
