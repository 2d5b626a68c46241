"""Bounds on what an outsider controls: JSON nesting depth, spec size, operator headers.

Every edge that reads a document (API bodies, CLI files, YAML specs, step outputs) checks
these before anything recursive (pydantic, canonical JSON, hashing) walks the value, so a
deep or huge document is a clear 400 / exit 2, never a RecursionError.
"""

from __future__ import annotations

import re
from typing import Any

from stellaorch.domain.errors import ValidationError

# Deeper than any sane spec, input or output, far below Python's recursion limit (1000).
MAX_JSON_DEPTH = 64
# A spec file: 10,000 steps at ~300 bytes each fit comfortably.
MAX_SPEC_BYTES = 4 * 1024 * 1024
# Nodes a YAML document may expand to once its aliases are followed (billion laughs).
MAX_YAML_NODES = 200_000
# X-Stella-Operator-Reason / -Ticket, kept in the audit log: a sentence and a ticket id.
MAX_OPERATOR_REASON_CHARS = 1024
MAX_OPERATOR_TICKET_CHARS = 128
# Runs one bulk call (dead-letter replay, bulk cancel) acts on; the rest are reported
# `remaining` and a repeat of the call takes the next ones (done ones are skipped).
MAX_BULK_RUNS = 500

# Possessive and with an optional closing quote, so an unterminated string ends the scan in
# linear time instead of being retried from every later quote.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


class NestingTooDeep(ValidationError):
    """A JSON or YAML document nests containers deeper than MAX_JSON_DEPTH."""

    code = "NESTING_TOO_DEEP"


class HeaderTooLong(ValidationError):
    """A request header the product keeps (operator reason or ticket) exceeds its bound."""

    code = "HEADER_TOO_LONG"


def bounded_header(name: str, value: str | None, limit: int) -> str | None:
    """`value` unchanged, or HeaderTooLong when it has more than `limit` characters."""
    if value is not None and len(value) > limit:
        raise HeaderTooLong(
            f"the {name} header is longer than {limit} characters",
            details={"header": name, "limit": limit},
        )
    return value


def text_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text `raw` opens more than `limit` containers at once.

    Works on the text, before parsing: strings are cut out (their brackets are data), then
    only brackets are kept, both with C-speed regex and translate calls.
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        depth += 1 if byte in _OPENERS else -1
        if depth > limit:
            return True
    return False


def value_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if a parsed value nests dicts/lists deeper than `limit` (iterative: no recursion).

    A value that contains itself (possible from YAML anchors) is infinitely deep.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
