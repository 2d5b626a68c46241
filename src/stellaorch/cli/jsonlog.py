"""Minimal JSON-lines logging to stderr: one object per record, `event` plus extra fields."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum

from pydantic.alias_generators import to_camel

from stellaorch.domain.providers import format_utc
from stellaorch.observability.redaction import REDACTOR, redact, redact_server_loggers
from stellaorch.observability.secret_values import KNOWN_SECRETS


class LogLevel(StrEnum):
    """Lowest level of log records a service command writes."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# Attributes every LogRecord has; anything else on a record came from `extra=`.
# uvicorn adds `color_message` (the message with ANSI colours) for its own console formatter.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonLineFormatter(logging.Formatter):
    """`{"timestamp", "level", "event", "logger", ...extras}`; extras in camelCase (runId)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one line of JSON."""
        doc: dict[str, object] = {
            "timestamp": format_utc(int(record.created * 1_000_000)),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            # Absent context (a run-level entry has no stepId) is left out, not written as null.
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                doc[to_camel(key)] = value
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        # Last line of defence: a secret value this process resolved, in any field or encoding.
        return KNOWN_SECRETS.redact(json.dumps(doc, default=str, ensure_ascii=False))


def configure_logging(level: str = "info") -> None:
    """Send every logger's records at `level` and above to stderr as JSON lines, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    # On the handler: every record passes it, whichever logger (ours or a library's) made it.
    handler.addFilter(REDACTOR)
    redact_server_loggers()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every migration check at info; only its problems matter to operators.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
