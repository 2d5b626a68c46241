"""An attempt's output on its way to the store while the attempt runs (`run logs --follow`).

The plugin hands every byte it keeps for the log to `feed`; nothing is written until there is
output, so a step that prints nothing costs no write. New output is written at most every
`log_flush_seconds` (sooner once a chunk's worth is waiting), redacted of the attempt's secret
values first: a value split across two reads is held back until it is whole. The interval
doubles every `_SLOWDOWN_EVERY` chunks and at most `MAX_CHUNKS` are written live; the rest,
and what arrives while a cancelled attempt winds down, is written by `close`.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from functools import partial

from stellaorch.domain.errors import StellaError
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.requests import Lease
from stellaorch.observability.secret_values import ValueRedactor
from stellaorch.store import logs

log = logging.getLogger("stellaorch.worker")

MAX_CHUNKS = 2048
_SLOWDOWN_EVERY = 256
_MAX_INTERVAL_SECONDS = 60.0
_NOTE_ROOM = 128  # past the cap: the capture's "log truncated" line
_DECODER = codecs.getincrementaldecoder("utf-8")


class LiveLog:
    """Buffers one attempt's log output and appends it to the store in redacted chunks."""

    def __init__(self, env: EngineEnv, lease: Lease) -> None:
        self._env = env
        self._lease = lease
        self._decoder = _DECODER(errors="replace")
        self._redactor: ValueRedactor | None = None
        self._pending = ""  # decoded, not yet redacted (a tail may be held back)
        self._ready: list[str] = []  # redacted, waiting for (or retrying) the write
        self._seq = 0
        self._fed = (
            0  # bytes taken: never much more than `max_log_bytes`, whatever the plugin sends
        )
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def written(self) -> bool:
        """True once any chunk of this attempt reached the store."""
        return self._seq > 0

    def feed(self, data: bytes) -> None:
        """Take log bytes (called from the plugin's pipe callbacks, on the worker's loop)."""
        room = self._env.settings.max_log_bytes + _NOTE_ROOM - self._fed
        if self._closed or not data or room <= 0:
            return
        self._fed += min(len(data), room)
        self._pending += self._decoder.decode(data[:room])
        if len(self._pending) >= self._env.settings.log_chunk_bytes:
            self._kick()
        elif self._timer is None and self._flushing is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval(), self._kick)

    async def discard(self) -> None:
        """The attempt's whole log is in its outcome: stop writing chunks, and let a write
        under way end first (its chunks must not land after the completion drops them)."""
        self._closed = True
        self._cancel_timer()
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def close(self) -> None:
        """The attempt ended without a log in its outcome: write everything still buffered."""
        self._closed = True
        if not self._fed:
            return  # it printed nothing: nothing to write, not even the end marker
        self._cancel_timer()
        if self._flushing is not None:
            await asyncio.shield(self._flushing)
        self._pending += self._decoder.decode(b"", final=True)
        tail = self._pending
        self._pending = ""
        redactor = self._secrets()
        if tail:
            self._ready.append(redactor.finish_live(tail) if redactor else tail)
        if self._ready or self.written:
            await self._write(end=True)

    def _interval(self) -> float:
        """The flush interval, doubling every `_SLOWDOWN_EVERY` chunks (row count stays low)."""
        base = self._env.settings.log_flush_seconds
        return float(min(base * 2 ** (self._seq // _SLOWDOWN_EVERY), _MAX_INTERVAL_SECONDS))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _kick(self) -> None:
        """Start a flush unless one is running (that one re-arms the timer when it ends)."""
        self._cancel_timer()
        if self._closed or self._flushing is not None or self._seq >= MAX_CHUNKS - 1:
            return
        self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            redactor = self._secrets()
            final, self._pending = (
                redactor.split_live(self._pending) if redactor else (self._pending, "")
            )
            if final:
                self._ready.append(final)
            await self._write(end=False)
        finally:
            self._flushing = None
        if self._pending and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self._interval(), self._kick)

    async def _write(self, *, end: bool) -> None:
        """Append the ready text as chunks (`end`: and the end marker, an empty chunk that
        tells followers nothing more comes); on a store outage keep it for the next write."""
        size = self._env.settings.log_chunk_bytes
        texts = [t[i : i + size] for t in self._ready for i in range(0, len(t), size)]
        texts = texts[: max(MAX_CHUNKS - 1 - self._seq, 0)]  # one seq stays for the marker
        texts += [""] if end else []
        if not texts:
            return
        lease, now = self._lease, self._env.clock.now_us()
        chunks = [
            logs.LogChunk(
                lease.tenant, lease.run_id, lease.step_id, lease.attempt, self._seq + i, text, now
            )
            for i, text in enumerate(texts, start=1)
        ]
        try:
            await self._env.db.transact(partial(logs.append_chunks, chunks=chunks))
        except StellaError as exc:
            log.warning("live log write failed: %s", exc.message, extra={"run_id": lease.run_id})
            return
        self._seq += len(chunks)
        self._ready = []

    def _secrets(self) -> ValueRedactor | None:
        """The attempt's redactor, built on first use (most attempts use no secrets)."""
        if self._redactor is None and self._lease.secrets.live:
            self._redactor = ValueRedactor(self._lease.secrets.live)
        return self._redactor
