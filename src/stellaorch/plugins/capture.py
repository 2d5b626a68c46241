"""Bounded capture of a child process's output: interleaved logs and the last JSON stdout line.

Log format: stdout lines verbatim and stderr lines prefixed with ``[stderr] ``, interleaved in
the order they were read, each ending in a newline. Only the first `max_log_bytes` are kept;
the rest is still fed in (the caller keeps reading so the child never blocks on a full pipe)
but only counted, and a final line ``[stella] log truncated: N bytes dropped`` says how much.
Outputs are tracked over everything fed in, kept or not. A line longer than `LINE_CAP` is
logged in pieces and can never be the outputs line.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from stellaorch.plugins.base import MAX_OUTPUT_BYTES

STDERR_PREFIX = b"[stderr] "
# Room for an outputs object that is pretty-printed on one line yet compacts under the limit.
LINE_CAP = MAX_OUTPUT_BYTES + 64 * 1024
_TAIL_LINES = 8
_TAIL_LINE_BYTES = 512


# Hands each piece of kept log on as it is kept (a live log); see `StepContext.log_sink`.
LogSink = Callable[[bytes], None]
_LIVE_TRUNCATED = b"[stella] log truncated: later output is dropped\n"


class LogBuffer:
    """Keeps the first `limit` bytes written to it and counts the bytes dropped after that."""

    def __init__(self, limit: int, sink: LogSink | None = None) -> None:
        self._limit = limit
        self._kept = bytearray()
        self._sink = sink
        self.dropped = 0

    def add_line(self, line: bytes, prefix: bytes = b"") -> None:
        """Append `prefix + line + newline`, keeping only what fits."""
        room = self._limit - len(self._kept)
        size = len(prefix) + len(line) + 1
        if room <= 0:
            # Once full, only count: floods of output must stay cheap.
            self.dropped += size
            return
        data = prefix + line + b"\n"
        self._kept += data[:room]
        self.dropped += max(size - room, 0)
        if self._sink is not None:
            self._sink(data[:room] if size <= room else data[:room] + b"\n" + _LIVE_TRUNCATED)

    def text(self) -> str:
        """The kept log as text, with the truncation marker if anything was dropped."""
        text = self._kept.decode("utf-8", errors="replace")
        if not self.dropped:
            return text
        if text and not text.endswith("\n"):
            text += "\n"
        return f"{text}[stella] log truncated: {self.dropped} bytes dropped\n"


class LineSplitter:
    """Cuts a byte stream into lines without ever holding more than `cap` bytes of one line."""

    def __init__(self, cap: int = LINE_CAP) -> None:
        self._cap = cap
        self._pending = bytearray()
        self._overlong = False

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bool]]:
        """Yield `(line, whole)` per line that `chunk` ends; overlong pieces are not whole."""
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            yield self._finish(part)
        self._pending += rest
        if len(self._pending) > self._cap:
            yield bytes(self._pending), False
            self._pending.clear()
            self._overlong = True

    def close(self) -> Iterator[tuple[bytes, bool]]:
        """Yield the unterminated last line, if any."""
        if self._pending:
            yield self._finish(b"")

    def _finish(self, tail: bytes) -> tuple[bytes, bool]:
        """Join the pending bytes with `tail` into one line and reset."""
        line = bytes(self._pending) + tail if self._pending else tail
        whole = not self._overlong
        self._pending.clear()
        self._overlong = False
        return line, whole


class OutputCapture:
    """Collects both streams of one child: the bounded log and the last JSON object on stdout."""

    def __init__(self, max_log_bytes: int, sink: LogSink | None = None) -> None:
        self._log = LogBuffer(max_log_bytes, sink)
        self._stdout = LineSplitter()
        self._stderr = LineSplitter()
        # The last stderr lines, whatever the log cap kept: they tell why a command died.
        self._stderr_tail: deque[bytes] = deque(maxlen=_TAIL_LINES)
        self.outputs: dict[str, Any] = {}

    def feed(self, data: bytes, *, stderr: bool) -> None:
        """Take the next bytes read from stdout (or stderr)."""
        splitter = self._stderr if stderr else self._stdout
        self._take(splitter.feed(data), stderr=stderr)

    def end(self, *, stderr: bool) -> None:
        """The stream reached EOF: take its unterminated last line."""
        splitter = self._stderr if stderr else self._stdout
        self._take(splitter.close(), stderr=stderr)

    def note(self, message: str) -> None:
        """Add a line from Stella itself (not the child) to the log."""
        self._log.add_line(message.encode("utf-8"), b"[stella] ")

    def logs(self) -> str:
        """The captured log text."""
        return self._log.text()

    def stderr_tail(self) -> str:
        """The last few stderr lines (each cut to a few hundred bytes), newline-joined."""
        return b"\n".join(self._stderr_tail).decode("utf-8", errors="replace")

    def _take(self, lines: Iterator[tuple[bytes, bool]], *, stderr: bool) -> None:
        """Log each line; a whole stdout line that is a JSON object becomes the outputs."""
        for line, whole in lines:
            if stderr:
                self._log.add_line(line, STDERR_PREFIX)
                self._stderr_tail.append(line[:_TAIL_LINE_BYTES])
                continue
            self._log.add_line(line)
            if whole and (parsed := parse_json_object(line)) is not None:
                self.outputs = parsed


def parse_json_object(line: bytes) -> dict[str, Any] | None:
    """The JSON object on `line`, or None if the line is anything else."""
    stripped = line.strip()
    # Cheap pre-check so a flood of plain text costs no parsing.
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        return None
    try:
        value = json.loads(stripped, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, though Python's parser accepts them."""
    raise ValueError(f"{name} is not JSON")
