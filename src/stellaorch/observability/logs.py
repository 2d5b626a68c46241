"""Service logging through structlog: one JSON object per line (a console view on a TTY).

Every record, whether it came from `logging.getLogger(...)` with `extra=` fields, from a
library, or from `structlog.get_logger()`, passes the same processors: context bound with
`structlog.contextvars` (tenant, runId, traceId...), the record's extras in camelCase, a UTC
`timestamp`, the `level`, the rendered line, and last the redaction of credentials and of every
secret value this process resolved, applied to the finished text so no field or encoding of
one escapes it.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Any, TextIO

import structlog
from pydantic.alias_generators import to_camel
from structlog.typing import EventDict, Processor, WrappedLogger

from stellaorch.domain.providers import format_utc
from stellaorch.observability.redaction import redact, redact_server_loggers

__all__ = ["LogLevel", "configure_logging", "line_formatter", "redact_line"]


class LogLevel(StrEnum):
    """Lowest level of log records a service command writes."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# Attributes every LogRecord has; anything else on a record came from `extra=` (or structlog).
# uvicorn adds `color_message` (the message with ANSI colours) for its own console formatter.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
    "_logger",
    "_name",
}
# Fields written first, in this order, so a line reads the same whichever process wrote it.
_LEADING = ("timestamp", "level", "event", "logger")


def _record_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Timestamp, level and logger from the stdlib record; its `extra=` fields."""
    record: logging.LogRecord | None = event_dict.get("_record")
    if record is None:
        return event_dict
    event_dict.setdefault("timestamp", format_utc(int(record.created * 1_000_000)))
    event_dict.setdefault("level", record.levelname.lower())
    event_dict.setdefault("logger", record.name)
    if not event_dict.get("_from_structlog"):
        for key, value in vars(record).items():
            # Absent context (a run-level entry has no stepId) is left out, not written as null.
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                event_dict.setdefault(key, value)
    return event_dict


def _camel_case(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Field names in camelCase (run_id -> runId), leading fields first, nulls dropped."""
    shaped: EventDict = {k: event_dict[k] for k in _LEADING if k in event_dict}
    for key, value in event_dict.items():
        if key in shaped or value is None:
            continue
        shaped[key if key.startswith("_") else to_camel(key)] = value
    return shaped


def redact_line(_: WrappedLogger, __: str, line: Any) -> Any:
    """The last processor: credentials and resolved secret values out of the rendered line."""
    return redact(line) if isinstance(line, str) else line


def _renderer(console: bool) -> Processor:
    if console:
        return structlog.dev.ConsoleRenderer(colors=True)
    return structlog.processors.JSONRenderer(default=str, ensure_ascii=False)


def line_formatter(console: bool = False) -> structlog.stdlib.ProcessorFormatter:
    """The formatter every service handler uses: JSON lines, or the console view on a TTY."""
    return structlog.stdlib.ProcessorFormatter(
        # A record's own fields win over the bound context (merge_contextvars fills gaps);
        # structlog's own records merged the context when they were made.
        foreign_pre_chain=[_record_fields, structlog.contextvars.merge_contextvars],
        processors=[
            _record_fields,
            structlog.processors.format_exc_info,
            _camel_case,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _renderer(console),
            redact_line,
        ],
    )


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every logger's records at `level` and above to stderr (JSON lines), redacted."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(line_formatter(console=_is_tty(out)))
    redact_server_loggers()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every migration check at info; only its problems matter to operators.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
