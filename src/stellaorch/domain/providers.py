"""Injectable sources of time, ids and randomness, so tests can be deterministic."""

from __future__ import annotations

import functools
import os
import random
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in integer microseconds since the Unix epoch."""

    def now_us(self) -> int:
        """Current time in microseconds."""
        ...


class SystemClock:
    """The real clock."""

    def now_us(self) -> int:
        """Current time in microseconds."""
        return time.time_ns() // 1000


class ManualClock:
    """A clock that only moves when told to, for tests."""

    def __init__(self, start_us: int = 1_767_225_600_000_000) -> None:
        self._now = start_us

    def now_us(self) -> int:
        """Current (frozen) time in microseconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += int(seconds * 1_000_000)


class IdProvider:
    """UUIDv7 run ids (time-ordered) and W3C trace ids; monotonic within a process."""

    def __init__(self, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._clock = clock or SystemClock()
        self._rng = rng
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def _random_bits(self, bits: int) -> int:
        if self._rng is not None:
            return self._rng.getrandbits(bits)
        return secrets.randbits(bits)

    def uuid7(self) -> str:
        """A UUIDv7 string; a 12-bit counter keeps ids created in one millisecond ordered."""
        with self._lock:
            ms = self._clock.now_us() // 1000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    ms += 1
                    self._counter = 0
            else:
                self._counter = self._random_bits(8)
            self._last_ms = ms
            rand_a = self._counter
        rand_b = self._random_bits(62)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= rand_a << 64
        value |= 0b10 << 62
        value |= rand_b
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def trace_id(self) -> str:
        """A 32-hex W3C trace id."""
        return f"{self._random_bits(128):032x}"

    def lease_id(self) -> str:
        """An opaque lease id."""
        return f"{self._random_bits(64):016x}"


def worker_identity() -> str:
    """host:pid, used to tell which worker holds a lease."""
    return f"{os.uname().nodename}:{os.getpid()}"


def format_utc(us: int | None) -> str | None:
    """RFC 3339 UTC with millisecond precision and `Z`, as the spec demands."""
    if us is None:
        return None
    return _format_ms(us // 1000)


@functools.lru_cache(maxsize=256)
def _format_ms(ms: int) -> str:
    # Every entry of a transaction carries the same time: formatting it once is enough.
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_utc(text: str) -> int:
    """Parse an RFC 3339 timestamp into epoch microseconds (naive values are taken as UTC)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)
