"""Credentials never reach a log line: tokens in query strings, Authorization values, JWTs."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from stellaorch.observability.secret_values import KNOWN_SECRETS, REDACTED

__all__ = ["REDACTED", "CredentialRedactor", "redact", "redact_server_loggers"]

# A query parameter: its name (maybe percent-encoded) and its value up to the next separator.
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;\s\"'?#]+)=(?P<value>[^&;\s\"'#]*)")
# Names whose value is a credential: exact names, and anything mentioning one of the words.
_SECRET_NAMES = frozenset({"auth", "key", "sig", "signature", "code", "jwt"})
_SECRET_WORDS = ("token", "authorization", "secret", "password", "passwd", "apikey", "api_key")
# `Bearer <credentials>` or `Basic <credentials>`, as in an Authorization header value; a
# credential is long, so prose ("a bearer of news") is left alone.
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]{8,}=*")
# A JWT anywhere (base64url JSON header and payload both start with `{"` = `eyJ`).
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

# Attributes every LogRecord has; any other string attribute came from `extra=`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _is_secret_name(raw: str) -> bool:
    # Starlette decodes %5F to `_`, so `access%5Ftoken` is as much a token as `access_token`.
    name = unquote_plus(raw).strip().lower()
    return name in _SECRET_NAMES or any(word in name for word in _SECRET_WORDS)


def _query_param(match: re.Match[str]) -> str:
    if not match["value"] or not _is_secret_name(match["name"]):
        return match[0]
    return f"{match['lead']}{match['name']}={REDACTED}"


def redact(text: str) -> str:
    """`text` with every credential and every secret value this process resolved redacted."""
    text = KNOWN_SECRETS.redact(text)
    text = _QUERY_PARAM.sub(_query_param, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


class CredentialRedactor(logging.Filter):
    """Rewrites a record's message and string extras before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it for the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
            if hasattr(record, "color_message"):  # uvicorn's: a format string for the old args
                record.color_message = cleaned
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


REDACTOR = CredentialRedactor()
# uvicorn logs the request line, query string included, on these two loggers.
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact_server_loggers() -> None:
    """Redact at the source, so any handler (ours, a test's, an operator's) sees clean records."""
    for name in SERVER_LOGGERS:
        logging.getLogger(name).addFilter(REDACTOR)  # a no-op when already added
