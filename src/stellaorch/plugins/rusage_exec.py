"""The script step's leader: run the command as a child, then report its resource usage.

Run as `python -I -S rusage_exec.py FD COMMAND...` (standard library only, nothing of
stellaorch is imported, so it starts fast). The command is forked and executed in this
process group; once it ends, `os.wait4` gives its CPU time and peak RSS (of it and of every
descendant it reaped), written as one JSON object to the inherited pipe `FD`. This process
then ends the way the command did: the same exit code, or death by the same signal. The
group's SIGTERM is for the command; this process ignores it so that it can still report.
If the command cannot be executed, the report is `{"execErrno": N}` and the exit code 127.
"""

from __future__ import annotations

import json
import os
import signal
import sys

EXEC_FAILED_CODE = 127
# Signals Python ignores at start-up (or the leader ignores) that an exec'd command expects
# at their default, as subprocess restores them.
_RESTORE = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _child(command: list[str], report_fd: int) -> None:
    """In the forked child: restore default signal handling and become the command."""
    for number in _RESTORE:
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)  # noqa: S606 - argv as given, as the plugin did before
    except OSError as exc:
        os.write(report_fd, json.dumps({"execErrno": exc.errno or 0}).encode() + b"\n")
    os._exit(EXEC_FAILED_CODE)


def main(argv: list[str]) -> int:
    """Fork, exec, wait with rusage, report and mirror the command's ending."""
    report_fd = int(argv[1])
    command = argv[2:]
    os.set_inheritable(report_fd, False)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        _child(command, report_fd)
    _, status, usage = os.wait4(pid, 0)
    report = {
        "cpuUserSeconds": round(usage.ru_utime, 6),
        "cpuSystemSeconds": round(usage.ru_stime, 6),
        "maxRssKiB": int(usage.ru_maxrss),
    }
    os.write(report_fd, json.dumps(report).encode() + b"\n")
    os.close(report_fd)
    if os.WIFSIGNALED(status):
        killed_by = os.WTERMSIG(status)
        if killed_by not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be handled
            signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
