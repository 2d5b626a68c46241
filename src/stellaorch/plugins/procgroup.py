"""Signalling and watching the process group a step's command runs in."""

from __future__ import annotations

import asyncio
import math
import os
import signal

_POLL_SECONDS = 0.02
_KILL_CONFIRM_SECONDS = 1.0
_PROC = "/proc"


async def terminate_group(pgid: int, grace: float) -> None:
    """SIGTERM every process of the group, then SIGKILL whatever is left after `grace`."""
    try:
        if signal_group(pgid, signal.SIGTERM):
            await _wait_group_gone(pgid, grace)
    finally:
        # In `finally` so a second cancellation during the grace still kills the group.
        killed = signal_group(pgid, signal.SIGKILL)
    if killed:
        # SIGKILL is delivered at once but dying takes a moment; callers expect none left.
        await _wait_group_gone(pgid, _KILL_CONFIRM_SECONDS)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` (0 only probes) to the process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member changed its uid: it exists, but it is out of our reach
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies do not count, where visible)."""
    if not signal_group(pgid, 0):
        return False
    try:
        return _running_member_in_proc(pgid)
    except OSError:
        return True  # no /proc: a zombie cannot be told from a running process


async def _wait_group_gone(pgid: int, grace: float) -> None:
    """Poll until no process of the group is running or `grace` seconds have passed."""
    # Polling, because the kernel offers no event for "the last member of a group exited".
    for _ in range(math.ceil(grace / _POLL_SECONDS)):
        if not group_alive(pgid):
            return
        await asyncio.sleep(_POLL_SECONDS)


def _running_member_in_proc(pgid: int) -> bool:
    """Scan /proc for a non-zombie process in the group.

    Killed grandchildren are re-parented to PID 1, which in a container without a reaping
    init may leave them as zombies for long; they still count for `killpg`, so without this
    check every stop would wait out the full grace. Reads of /proc are served from memory.
    """
    with os.scandir(_PROC) as entries:
        for entry in entries:
            if entry.name.isdigit() and _is_running_in_group(entry.name, pgid):
                return True
    return False


def _is_running_in_group(pid: str, pgid: int) -> bool:
    """Whether /proc/<pid>/stat shows a non-zombie process in group `pgid`."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return False  # exited while we scanned
    # The command name may hold spaces or ')', so the fields are read after the last ')'.
    state, _ppid, group, *_ = stat[stat.rfind(b")") + 2 :].split(maxsplit=3)
    return state != b"Z" and int(group) == pgid
