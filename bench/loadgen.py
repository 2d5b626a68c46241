"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (cheap per request).

httpx spends more CPU per request than the server under test; on a 2-core machine the
generator must stay light so the measured numbers belong to the server.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """Latencies (seconds) and status counts of a load phase."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    bodies: list[bytes] = field(default_factory=list)

    def rate(self) -> float:
        """Completed requests per second."""
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    def p50(self) -> float:
        """Median latency in milliseconds."""
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


def request_bytes(method: str, path: str, headers: dict[str, str], body: Any = None) -> bytes:
    """Serialise one HTTP/1.1 request."""
    raw = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(raw)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one response with a Content-Length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


Make = Callable[[int], bytes]


async def closed_loop(
    host: str, port: int, make: Make, connections: int, seconds: float, keep: bool = False
) -> Result:
    """Each connection sends its next request as soon as the last one is answered."""
    result = Result()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(make(next(counter)))
            status, body = await read_response(reader)
            result.latencies.append(time.perf_counter() - start)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if keep:
                result.bodies.append(body)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    result.elapsed = time.perf_counter() - start
    return result


async def open_loop(
    host: str, port: int, make: Make, rate: float, seconds: float, connections: int
) -> Result:
    """Requests at a fixed rate; latency counts from the scheduled send time (no omission)."""
    result = Result()
    total = int(rate * seconds)
    slots: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        slots.put_nowait(await asyncio.open_connection(host, port))
    begin = time.perf_counter()

    async def fire(i: int) -> None:
        scheduled = begin + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        reader, writer = await slots.get()
        try:
            writer.write(make(i))
            status, body = await read_response(reader)
        finally:
            slots.put_nowait((reader, writer))
        result.latencies.append(time.perf_counter() - scheduled)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.bodies.append(body)

    await asyncio.gather(*(fire(i) for i in range(total)))
    result.elapsed = time.perf_counter() - begin
    while not slots.empty():
        slots.get_nowait()[1].close()
    return result
