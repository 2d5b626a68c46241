"""Resource usage of a script step's process tree, measured by the `rusage_exec` leader."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEADER = Path(__file__).with_name("rusage_exec.py")
# Inside the sandbox the leader runs under the system interpreter (the host's /usr is bound
# read-only) from its source text; without one, a sandboxed step goes unmeasured.
SANDBOX_PYTHON = "/usr/bin/python3"
# A report is two short JSON lines; anything longer is not one.
_MAX_REPORT_BYTES = 4096


@dataclass
class UsageReport:
    """What the leader reported: CPU seconds and peak RSS, and an exec failure's errno."""

    usage: dict[str, Any] = field(default_factory=dict)
    exec_errno: int | None = None


class UsageMeter:
    """A pipe the leader reports on; `wrap` the argv, spawn with `fds`, then `read` once."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_inheritable(self._write_fd, True)

    @property
    def fds(self) -> tuple[int, ...]:
        """The descriptor the spawned leader must inherit."""
        return (self._write_fd,)

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` under the measuring leader."""
        return [sys.executable, "-I", "-S", str(LEADER), str(self._write_fd), *argv]

    def wrap_inside(self, argv: list[str]) -> list[str]:
        """`wrap` for inside the sandbox, whose pid namespace hides the tree from the host."""
        if not os.access(SANDBOX_PYTHON, os.X_OK):
            return argv
        source = LEADER.read_text(encoding="utf-8")
        return [SANDBOX_PYTHON, "-I", "-S", "-c", source, str(self._write_fd), *argv]

    def spawned(self) -> None:
        """Close this process's copy of the write end (the leader holds its own)."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1

    def read(self) -> UsageReport:
        """The report once the leader has exited (empty if it died before reporting)."""
        self.spawned()
        os.set_blocking(self._read_fd, False)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while len(data) < _MAX_REPORT_BYTES and (chunk := os.read(self._read_fd, 1024)):
                data += chunk
        return parse_report(data)

    def close(self) -> None:
        """Release both ends (idempotent)."""
        self.spawned()
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1


def parse_report(data: bytes) -> UsageReport:
    """Parse the leader's JSON lines; lines that are not JSON objects are ignored."""
    report = UsageReport()
    for line in data.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("execErrno"), int):
            report.exec_errno = item["execErrno"]
        else:
            report.usage = {k: v for k, v in item.items() if isinstance(v, int | float)}
    return report
