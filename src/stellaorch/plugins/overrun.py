"""Telling a sandboxed command that hit a resource limit from one that merely failed.

The kernel reports a limit in one of two ways: a signal (SIGXCPU for CPU time, SIGXFSZ for
file size; bubblewrap turns a signal death into exit code 128 + signal) or a failed system
call the program then reports on stderr (ENOMEM from the address-space limit, EAGAIN from
fork under the process limit, EMFILE for open files, ENOSPC when a size-capped tmpfs is full).
Such a failure is `RESOURCE_LIMIT_EXCEEDED` and not retryable: the same step with the same
limits would hit it again.
"""

from __future__ import annotations

import re
import signal

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins.sandbox import Limits

RESOURCE_LIMIT_EXCEEDED = "RESOURCE_LIMIT_EXCEEDED"
_SIGNAL_EXIT_BASE = 128

# (limit name, pattern over the last stderr lines); the first match wins.
_STDERR_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "memory",
        re.compile(
            r"MemoryError|Cannot allocate memory|out of memory|memory exhausted"
            r"|std::bad_alloc|failed to allocate",
            re.IGNORECASE,
        ),
    ),
    (
        "processes",
        re.compile(
            r"fork.*(Resource temporarily unavailable|retry)"
            r"|Resource temporarily unavailable.*fork"
            r"|can't fork|Cannot fork",
            re.IGNORECASE,
        ),
    ),
    ("openFiles", re.compile(r"Too many open files", re.IGNORECASE)),
    ("disk", re.compile(r"No space left on device|File too large", re.IGNORECASE)),
)


def limit_failure(
    returncode: int, stderr_tail: str, limits: Limits, logs: str
) -> StepFailed | None:
    """The typed failure when exit status or stderr show a limit was hit, else None."""
    limit = _limit_hit(returncode, stderr_tail)
    if limit is None:
        return None
    message = f"the step exceeded its {describe(limit, limits)} (exit code {returncode})"
    return StepFailed(RESOURCE_LIMIT_EXCEEDED, message, retryable=False, logs=logs)


def _limit_hit(returncode: int, stderr_tail: str) -> str | None:
    if returncode in (-signal.SIGXCPU, _SIGNAL_EXIT_BASE + signal.SIGXCPU):
        return "cpu"
    if returncode in (-signal.SIGXFSZ, _SIGNAL_EXIT_BASE + signal.SIGXFSZ):
        return "fileSize"
    if returncode == 0:
        return None
    for limit, pattern in _STDERR_PATTERNS:
        if pattern.search(stderr_tail):
            return limit
    return None


def describe(limit: str, limits: Limits) -> str:
    """The limit as an operator reads it, with where its value comes from."""
    return {
        "cpu": f"CPU-time limit of {limits.cpu_seconds} s per process (resources.cpuSeconds)",
        "memory": f"memory limit of {limits.memory_mb} MB per process (resources.memoryMb)",
        "processes": f"process limit of {limits.processes} (STELLA_ORCH_SANDBOX_PROCESSES)",
        "openFiles": f"open-file limit of {limits.open_files} (STELLA_ORCH_SANDBOX_OPEN_FILES)",
        "fileSize": f"file-size limit of {limits.file_size_mb} MB "
        "(STELLA_ORCH_SANDBOX_FILE_SIZE_MB)",
        "disk": f"disk space: /work holds {limits.work_mb} MB, /tmp {limits.tmp_mb} MB "
        "(STELLA_ORCH_SANDBOX_WORK_MB, STELLA_ORCH_SANDBOX_TMP_MB)",
    }[limit]
