"""The egress proxy's rules, driven over its Unix socket without a sandbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stellaorch.plugins import egress
from stellaorch.plugins.egress import Allowlist, EgressProxy


def test_allowlist_entries() -> None:
    allow = Allowlist.parse(["Example.ORG", "api.example.net:8443", "[::1]:9000", "h.test."])
    assert allow.allows("example.org", 80) and allow.allows("EXAMPLE.org", 443)
    assert not allow.allows("example.org", 8080)
    assert allow.allows("api.example.net", 8443) and not allow.allows("api.example.net", 443)
    assert allow.allows("[::1]", 9000) and allow.allows("::1", 9000)
    assert allow.allows("h.test", 443)
    assert not allow.allows("evil.example.org", 443)
    with pytest.raises(ValueError):
        Allowlist.parse(["host:99999"])


async def ask(socket_path: str, data: bytes) -> str:
    """Send `data` to the proxy and return everything it answers."""
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer.decode()


@pytest.fixture
async def upstream() -> asyncio.AbstractServer:
    """A TCP server counting connections in `upstream.hits` (a list)."""
    hits: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.hits = hits  # type: ignore[attr-defined]
    return server


async def test_unlisted_targets_are_refused_without_connecting(
    tmp_path: Path, upstream: asyncio.AbstractServer
) -> None:
    port = upstream.sockets[0].getsockname()[1]
    path = str(tmp_path / "p.sock")
    async with EgressProxy(["127.0.0.1:1"], path) as proxy:
        tunnel = await ask(path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        plain = await ask(path, f"GET http://127.0.0.1:{port}/x HTTP/1.1\r\n\r\n".encode())
    assert tunnel.startswith("HTTP/1.1 403") and plain.startswith("HTTP/1.1 403")
    assert upstream.hits == []  # type: ignore[attr-defined]
    assert proxy.refused == [f"127.0.0.1:{port}"] * 2


async def test_absolute_form_is_forwarded_in_origin_form_without_proxy_headers(
    tmp_path: Path, upstream: asyncio.AbstractServer
) -> None:
    port = upstream.sockets[0].getsockname()[1]
    path = str(tmp_path / "p.sock")
    request = (
        f"GET http://127.0.0.1:{port}/feed?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Proxy-Authorization: Basic c2VjcmV0\r\n\r\n"
    )
    async with EgressProxy([f"127.0.0.1:{port}"], path):
        answer = await ask(path, request.encode())
    assert "GET /feed?x=1 HTTP/1.1" in answer
    assert "Proxy-Authorization" not in answer and "Connection: close" in answer


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"CONNECT nohost HTTP/1.1\r\n\r\n",
        b"GET ftp://example.org/ HTTP/1.1\r\n\r\n",
        b"GET http://example.org/ HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
async def test_malformed_or_oversized_requests_are_400(tmp_path: Path, head: bytes) -> None:
    path = str(tmp_path / "p.sock")
    async with EgressProxy(["example.org"], path):
        answer = await ask(path, head)
    assert answer.startswith("HTTP/1.1 400")


async def test_a_head_that_never_ends_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egress, "HEAD_TIMEOUT_SECONDS", 0.2)
    path = str(tmp_path / "p.sock")
    async with EgressProxy(["example.org"], path):
        answer = await ask(path, b"CONNECT example.org:443 HTTP/1.1\r\n")
    assert answer.startswith("HTTP/1.1 400")
