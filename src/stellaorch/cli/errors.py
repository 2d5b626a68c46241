"""The CLI's one mapping from errors to exit codes (SPEC §4) and how an error is reported."""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Coroutine, Mapping
from enum import IntEnum
from typing import Any, NoReturn

import typer

from stellaorch.domain.errors import (
    Conflict,
    NotFound,
    StellaError,
    StoreUnavailable,
    ValidationError,
)


class ExitCode(IntEnum):
    """Process exit codes, as SPEC §4 fixes them (130 is the shell's code for Ctrl-C)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    OFFLINE = 5
    CANCEL_REJECTED = 6
    TRANSIENT = 10
    INTERRUPTED = 130


class SettingsInvalid(ValidationError):
    """A flag or STELLA_ORCH_* variable that the settings reject."""

    code = "SETTINGS_INVALID"


class UsageInvalid(ValidationError):
    """Flags that are fine alone but make no sense together."""

    code = "USAGE_INVALID"


class CancelRejected(Conflict):
    """A cancel of a run that had already ended (the run is returned unchanged)."""

    code = "CANCEL_REJECTED"


class RunUnsuccessful(StellaError):
    """A run the CLI waited for ended failed or cancelled."""

    code = "RUN_UNSUCCESSFUL"

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.code = f"RUN_{status.upper()}"


class LedgerBroken(StellaError):
    """A run's ledger chain does not verify."""

    code = "LEDGER_BROKEN"


class WorkerCrashed(StellaError):
    """The in-process worker stopped on an unexpected error."""

    code = "WORKER_CRASHED"


# By code first: the HTTP client (a later face) only knows an error envelope's code, and
# these errors have no class in this process yet.
_BY_CODE: Mapping[str, ExitCode] = {
    "UNAUTHENTICATED": ExitCode.AUTH,
    "TOKEN_INVALID": ExitCode.AUTH,
    "TENANT_REQUIRED": ExitCode.AUTH,
    "TENANT_FORBIDDEN": ExitCode.AUTH,
    "SCOPE_REQUIRED": ExitCode.AUTH,
    "OFFLINE_VIOLATION": ExitCode.OFFLINE,
    "CANCEL_REJECTED": ExitCode.CANCEL_REJECTED,
}
# Then by class, most specific first; anything else is a plain error (1).
_BY_CLASS: tuple[tuple[type[StellaError], ExitCode], ...] = (
    (CancelRejected, ExitCode.CANCEL_REJECTED),
    (ValidationError, ExitCode.USAGE),
    (NotFound, ExitCode.NOT_FOUND),
    (StoreUnavailable, ExitCode.TRANSIENT),
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code an error ends the process with."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if not isinstance(exc, StellaError):
        return ExitCode.ERROR
    if exc.code in _BY_CODE:
        return _BY_CODE[exc.code]
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    return ExitCode.TRANSIENT if exc.retryable else ExitCode.ERROR


def error_lines(exc: BaseException) -> list[str]:
    """`error: CODE: message`, then one indented line per listed problem (spec paths)."""
    if isinstance(exc, StellaError):
        lines = [f"error: {exc.code}: {exc.message}"]
        problems = exc.details.get("errors")
        if isinstance(problems, list) and len(problems) > 1:
            lines += [f"  {p.get('path', '$')}: {p.get('message', '')}" for p in problems]
        return lines
    if isinstance(exc, KeyboardInterrupt):
        return ["error: INTERRUPTED: stopped by the user"]
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return [f"error: OS_ERROR: {exc.strerror or exc}{where}"]
    return [f"error: INTERNAL: {type(exc).__name__}: {exc} (run with -v for the traceback)"]


def report(exc: BaseException, *, verbose: bool) -> None:
    """Print the error for a human on stderr; the traceback only when asked for."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    for line in error_lines(exc):
        print(line, file=sys.stderr, flush=True)


def run_command(work: Coroutine[Any, Any, None], *, verbose: bool) -> NoReturn:
    """Run a command's coroutine and exit with the code its outcome maps to."""
    try:
        asyncio.run(work)
    except (Exception, KeyboardInterrupt) as exc:
        report(exc, verbose=verbose)
        raise typer.Exit(int(exit_code_for(exc))) from None
    raise typer.Exit(int(ExitCode.OK))
