"""`stella orch serve` bounds what a client controls before its request exists: the size of
the request head (431, never buffered), the time to send it (408), idle keep-alive time, and
the number of open connections (503 beyond the limit, served again once they close).

Each test starts its own `serve` on a free port with the settings it exercises, and talks
to it over raw sockets where an HTTP client would refuse to misbehave.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from services import Service, api_token, service

TENANT = "acme"
HEALTH = "/api/v1/orchestrator/admin/health"
MiB = 1024 * 1024


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Service, str]]:
    """`serve` with STELLA_ORCH_<settings>; yields it and a read token it accepts."""
    keys = tmp_path / "keys"
    token = api_token(keys, TENANT, ["orchestrator:read"])
    env = {f"STELLA_ORCH_{k.upper()}": str(v) for k, v in settings.items()}
    env["STELLA_ORCH_KEYS_DIR"] = str(keys)
    url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    async with service("serve", url, tmp_path / "serve.log", env) as started:
        yield started, token


def health(started: Service, token: str) -> httpx.Response:
    """GET the health probe on a new connection."""
    headers = {"Authorization": f"Bearer {token}", "X-Stella-Tenant": TENANT}
    return httpx.get(f"{started.url}{HEALTH}", headers=headers, timeout=10)


def connect(started: Service) -> socket.socket:
    """A raw TCP connection to the API."""
    assert started.port is not None
    return socket.create_connection(("127.0.0.1", started.port), timeout=10)


def read_until_closed(sock: socket.socket, within: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(within)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def error_code(response: bytes) -> tuple[int, str]:
    """Status and envelope code of a raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, str(json.loads(body)["error"]["code"])


def peak_rss_bytes(started: Service) -> int:
    """The service process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{started.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def poll(probe: Callable[[], bool], within: float, what: str) -> None:
    """Retry `probe` until it is true."""
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


# -- size of the request head ----------------------------------------------------------------
async def test_oversized_headers_get_431_while_other_requests_are_served(tmp_path: Path) -> None:
    async with serving(tmp_path, api_max_header_bytes=16384) as (started, token):
        with connect(started) as slow:
            slow.sendall(b"GET " + HEALTH.encode() + b" HTTP/1.1\r\nHost: a\r\n")
            slow.sendall(b"Authorization: Bearer " + b"a" * 8000)  # under the bound, unfinished
            assert health(started, token).status_code == 200
            slow.sendall(b"a" * 16384)
            assert error_code(read_until_closed(slow)) == (431, "HEADERS_TOO_LARGE")
        assert health(started, token).status_code == 200


async def test_a_huge_header_is_refused_without_being_buffered(tmp_path: Path) -> None:
    async with serving(tmp_path) as (started, token):
        before = peak_rss_bytes(started)
        with connect(started) as huge:
            huge.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ")
            sent, answer = 0, bytearray()
            reader = threading.Thread(target=lambda: answer.extend(read_until_closed(huge)))
            reader.start()
            try:
                while sent < 120 * MiB:
                    huge.sendall(b"a" * MiB)
                    sent += MiB
            except OSError:  # refused and closed: the rest is never read
                pass
            reader.join(15)
        grown = peak_rss_bytes(started) - before
        assert grown < 32 * MiB, f"sent {sent // MiB} MiB, peak memory grew {grown // MiB} MiB"
        assert error_code(bytes(answer)) == (431, "HEADERS_TOO_LARGE")
        assert health(started, token).status_code == 200


# -- time to send the request head ---------------------------------------------------------
async def test_a_request_head_dripped_slower_than_the_timeout_gets_408(tmp_path: Path) -> None:
    async with serving(tmp_path, api_header_timeout_seconds=1) as (started, token):
        with connect(started) as drip:
            start = time.monotonic()
            drip.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
            drip.settimeout(0.2)
            answer = b""
            while time.monotonic() - start < 8:
                try:
                    drip.sendall(b"X-Drip: a\r\n")  # every line is valid, none ends the head
                    chunk = drip.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                answer += chunk
            elapsed = time.monotonic() - start
        assert error_code(answer) == (408, "REQUEST_TIMEOUT")
        assert elapsed < 5, elapsed
        assert health(started, token).status_code == 200


async def test_a_connection_that_sends_nothing_is_closed_quietly(tmp_path: Path) -> None:
    async with serving(tmp_path, api_header_timeout_seconds=1) as (started, _):
        with connect(started) as idle:
            start = time.monotonic()
            assert read_until_closed(idle) == b""
        assert time.monotonic() - start < 5


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, api_keep_alive_seconds=1) as (started, _):
        with connect(started) as kept:
            kept.sendall(f"GET {HEALTH} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            start = time.monotonic()
            answer = read_until_closed(kept)  # 401 (no token), then the keep-alive ends
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert time.monotonic() - start < 5


# -- open connections ------------------------------------------------------------------------
async def test_connections_beyond_the_limit_get_503_until_they_close(tmp_path: Path) -> None:
    async with serving(tmp_path, api_max_connections=5) as (started, token):
        assert health(started, token).status_code == 200
        with ExitStack() as idle:
            for _ in range(5):
                idle.enter_context(connect(started))
            poll(lambda: health(started, token).status_code == 503, 10, "requests get 503")
        poll(lambda: health(started, token).status_code == 200, 10, "the server serves again")
