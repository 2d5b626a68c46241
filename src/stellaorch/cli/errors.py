"""The CLI's one mapping from errors to exit codes (SPEC §4) and how an error is reported."""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Coroutine, Mapping
from enum import IntEnum
from typing import Any, NoReturn

import typer

from stellaorch.cli.output import silence_stdout
from stellaorch.domain.errors import (
    Conflict,
    NotFound,
    StellaError,
    StoreUnavailable,
    ValidationError,
)

# A service process's errors are defined with the others in domain.errors (the service
# package raises them); the CLI's commands name them from here, beside their exit codes.
from stellaorch.domain.errors import SchedulerCrashed as SchedulerCrashed
from stellaorch.domain.errors import ServiceFailed as ServiceFailed
from stellaorch.domain.errors import SettingsInvalid as SettingsInvalid
from stellaorch.domain.errors import UsageInvalid as UsageInvalid
from stellaorch.domain.errors import WorkerCrashed as WorkerCrashed
from stellaorch.domain.errors import WorkerStopTimeout as WorkerStopTimeout


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


class ExportBroken(StellaError):
    """An offline kit that does not verify (its first problem is the message)."""

    code = "EXPORT_BROKEN"


class RemoteError(StellaError):
    """An error the API answered with: its envelope's code, message and trace id."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        trace_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.code = code
        self.trace_id = trace_id or None
        self.retryable = _BY_STATUS.get(status) is ExitCode.TRANSIENT


class ApiUnreachable(StellaError):
    """No answer from the API: connection refused or reset, a timeout, a closed stream."""

    code = "API_UNREACHABLE"
    retryable = True


# By code first: an envelope's code is more precise than its HTTP status (a 409 that is a
# rejected cancel is 6, other conflicts are 1), and some codes have no class in this process.
_BY_CODE: Mapping[str, ExitCode] = {
    "UNAUTHENTICATED": ExitCode.AUTH,
    "TOKEN_INVALID": ExitCode.AUTH,
    "TENANT_REQUIRED": ExitCode.AUTH,
    "TENANT_FORBIDDEN": ExitCode.AUTH,
    "SCOPE_REQUIRED": ExitCode.AUTH,
    "OFFLINE_VIOLATION": ExitCode.OFFLINE,
    "CANCEL_REJECTED": ExitCode.CANCEL_REJECTED,
    # a signature by a key the trust store does not hold (unknown or revoked): not authorised
    "SIGNER_NOT_TRUSTED": ExitCode.AUTH,
    # answered with 503 like an outage, but waiting cannot mend a damaged store
    "STORE_CORRUPT": ExitCode.ERROR,
}
# Then an API error by HTTP status. Conflicts (409: RUN_TOKEN_CONFLICT, DAG_VERSION_CONFLICT,
# DAG_VERSION_DISABLED, IDEMPOTENCY_KEY_REUSED) stay 1, as in the local face: the request is
# well-formed, repeating it unchanged cannot help, and the code on stderr tells them apart.
_BY_STATUS: Mapping[int, ExitCode] = {
    400: ExitCode.USAGE,
    413: ExitCode.USAGE,
    422: ExitCode.USAGE,
    401: ExitCode.AUTH,
    403: ExitCode.AUTH,
    404: ExitCode.NOT_FOUND,
    408: ExitCode.TRANSIENT,
    429: ExitCode.TRANSIENT,
    502: ExitCode.TRANSIENT,
    503: ExitCode.TRANSIENT,
    504: ExitCode.TRANSIENT,
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
    if isinstance(exc, RemoteError):
        return _BY_STATUS.get(exc.status, ExitCode.ERROR)
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
    """Print the error for a human on stderr; traceback or trace id only when asked for."""
    lines = error_lines(exc)
    if verbose and isinstance(exc, RemoteError):
        # The server's side of the story is in its log under this trace id; our own traceback
        # would only show the HTTP client.
        lines[0] += f" (traceId {exc.trace_id or 'unknown'})"
    elif verbose:
        traceback.print_exception(exc, file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def _run(work: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (several times cheaper per request and event)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
        return
    uvloop.run(work)


def run_command(work: Coroutine[Any, Any, None], *, verbose: bool) -> NoReturn:
    """Run a command's coroutine and exit with the code its outcome maps to."""
    try:
        _run(work)
    except BrokenPipeError:
        # `stella orch run list | head -1`: the reader has what it wanted; not an error.
        silence_stdout()
        raise typer.Exit(int(ExitCode.OK)) from None
    except (Exception, KeyboardInterrupt) as exc:
        report(exc, verbose=verbose)
        raise typer.Exit(int(exit_code_for(exc))) from None
    raise typer.Exit(int(ExitCode.OK))
