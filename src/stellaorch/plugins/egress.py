"""The egress proxy of one sandboxed attempt: only the hosts its `network` lists are reachable.

The step's network namespace has loopback only; its one way out is this proxy, an HTTP proxy
(`CONNECT host:port` for TLS and anything else, absolute-form requests for plain HTTP) on a
Unix socket bound into the sandbox. The proxy, in the worker, resolves and connects only to
listed `host[:port]` entries (a bare host means ports 80 and 443); everything else is answered
`403` and never connected. Request heads are bounded in size and time, connections in number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 64
_DEFAULT_PORTS = (80, 443)
_BUFFER = 64 * 1024
_ENTRY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")
_AUTHORITY = _ENTRY
_REQUEST_LINE = re.compile(r"(?P<method>[A-Z]{1,16}) (?P<target>\S{1,8192}) HTTP/1\.[01]")
_ABSOLUTE = re.compile(r"http://(?P<authority>[^/?#\s]+)(?P<path>[/?][^\s]*)?", re.IGNORECASE)
_HOP_HEADERS = frozenset({"proxy-connection", "proxy-authorization", "connection", "keep-alive"})


@dataclass(frozen=True)
class Allowlist:
    """The `(host, port)` pairs a step may reach; hosts compared case-insensitively."""

    pairs: frozenset[tuple[str, int]]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """From `host`, `host:port`, `[v6]` or `[v6]:port` entries (ports 80/443 by default)."""
        pairs: set[tuple[str, int]] = set()
        for entry in entries:
            host, port = _split(entry)
            if host is None:
                raise ValueError(f"network entry {entry!r} is not host[:port]")
            pairs.update((host, p) for p in ([port] if port else _DEFAULT_PORTS))
        return cls(frozenset(pairs))

    def allows(self, host: str, port: int) -> bool:
        """Whether the step may connect to `host:port`."""
        return (_normal_host(host), port) in self.pairs


def _split(authority: str) -> tuple[str | None, int | None]:
    """(host, port or None) of `host[:port]`; host None when it does not parse."""
    match = _AUTHORITY.fullmatch(authority.strip())
    if match is None:
        return None, None
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65_535:
        return None, None
    return _normal_host(match["host"]), port


def _normal_host(host: str) -> str:
    """Lowercase, no brackets, no trailing dot: one spelling per host."""
    return host.strip("[]").rstrip(".").lower()


class EgressProxy:
    """An allowlisting HTTP proxy on a Unix socket, for the life of one attempt."""

    def __init__(
        self, allow: list[str], socket_path: str, *, socket_uid: int | None = None
    ) -> None:
        self.allowlist = Allowlist.parse(allow)
        self.socket_path = socket_path
        self._socket_uid = socket_uid
        self._server: asyncio.AbstractServer | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused: list[str] = []  # `host:port` asked for and refused, for the step's log

    async def __aenter__(self) -> EgressProxy:
        self._server = await asyncio.start_unix_server(self._accept, path=self.socket_path)
        # Only the step's uid may connect (the socket dir is its, too).
        if self._socket_uid is not None:
            os.chown(self.socket_path, self._socket_uid, -1)
        os.chmod(self.socket_path, 0o600)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._slots.locked():
                await _answer(writer, 503, "too many connections through the egress proxy")
                return
            async with self._slots:
                await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the step or the upstream went away: nothing to report to either
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request head, decide, then tunnel or forward."""
        head = await _read_head(reader)
        if head is None:
            await _answer(writer, 400, "not an HTTP proxy request (or its head is too large)")
            return
        request = _parse(head)
        if request is None:
            await _answer(writer, 400, "expected CONNECT host:port or an http:// absolute URL")
            return
        host, port, first = request
        if not self.allowlist.allows(host, port):
            self.refused.append(f"{host}:{port}")
            await _answer(writer, 403, f"{host}:{port} is not in this step's network allowlist")
            return
        try:
            connecting = asyncio.open_connection(host, port, limit=_BUFFER)
            up_reader, up_writer = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"cannot connect to {host}:{port}: {exc}")
            return
        try:
            if first is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(first)
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request head up to the blank line, within the size and time bounds."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
        return None
    return head if len(head) <= MAX_HEAD_BYTES else None


def _parse(head: bytes) -> tuple[str, int, bytes | None] | None:
    """(host, port, bytes to send upstream first or None for a tunnel) of a proxy request."""
    lines = head.decode("latin-1").split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    method, target = match["method"], match["target"]
    if method == "CONNECT":
        host, port = _split(target)
        return (host, port, None) if host is not None and port is not None else None
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        return None
    host, port = _split(absolute["authority"])
    if host is None:
        return None
    headers = [
        line for line in lines[1:] if line and line.split(":", 1)[0].strip().lower()
        not in _HOP_HEADERS
    ]  # fmt: skip
    first_line = f"{method} {absolute['path'] or '/'} HTTP/1.1"
    text = "\r\n".join([first_line, *headers, "Connection: close", "", ""])
    return host, port or 80, text.encode("latin-1")


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """A short plain-text response, then close: the step's tool prints it."""
    reasons = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Busy"}
    body = f"stella egress: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        writer.write(head.encode() + body)
        await writer.drain()


async def _pipe_both(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides are done (each end is half-closed when the other is)."""
    tasks = [
        asyncio.create_task(_pipe(a_reader, b_writer)),
        asyncio.create_task(_pipe(b_reader, a_writer)),
    ]
    try:
        await asyncio.wait(tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction; half-close the other side at the end."""
    with contextlib.suppress(OSError):
        while data := await reader.read(_BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
