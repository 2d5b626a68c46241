"""Redaction of known secret values, in the encodings a script would print them in.

`ValueRedactor` replaces every occurrence of a value, raw or base64 (standard, URL-safe, with
or without padding), URL-encoded, JSON-escaped, Python-repr'd or hex, by the marker. A log cut by
its size cap may end in the first part of a value: that part is replaced too. The process-wide
`KNOWN_SECRETS` holds every value this process resolved, for the service's own log records.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "***REDACTED***"
TRUNCATION_MARKER = "[stella] log truncated:"
MIN_PARTIAL = 4  # shorter prefixes of a value at a cut are too common to mean anything
MAX_KNOWN = 4096


def encodings(value: str) -> set[str]:
    """`value` and the forms a script may print it in (empty strings left out)."""
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        raw.hex(),
        repr(value)[1:-1],  # what Python prints for a value inside a repr'd container
    }
    forms |= {form.rstrip("=") for form in forms}
    return {form for form in forms if form}


class ValueRedactor:
    """Replaces a fixed set of secret values, in every encoding, by the marker."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        variants = {form for value in values if value for form in encodings(value)}
        self._variants = sorted(variants, key=lambda v: (-len(v), v))
        alternatives = "|".join(re.escape(v) for v in self._variants)
        self._pattern = re.compile(alternatives) if self._variants else None

    def __bool__(self) -> bool:
        """True when there is anything to redact."""
        return self._pattern is not None

    def text(self, text: str) -> str:
        """`text` with every occurrence replaced, and a value cut by log truncation too."""
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(REDACTED, text)
        cut = text.find("\n" + TRUNCATION_MARKER)
        if cut < 0 and text.startswith(TRUNCATION_MARKER):
            cut = 0
        return text if cut <= 0 else self._trim_partial(text[:cut]) + text[cut:]

    def _trim_partial(self, kept: str) -> str:
        """Replace a trailing first part of any value (what a size cap cut in half)."""
        best = 0
        for variant in self._variants:
            for size in range(min(len(variant) - 1, len(kept)), MIN_PARTIAL - 1, -1):
                if size > best and kept.endswith(variant[:size]):
                    best = size
                    break
        return kept[: len(kept) - best] + REDACTED if best else kept

    def split_live(self, text: str) -> tuple[str, str]:
        """Cut a live stream: (the redacted part that is final, the raw tail to hold back).

        The tail is the shortest end of `text` that could still grow into a value (a first
        part of one), so a value split across two reads is never written half in the clear.
        """
        if self._pattern is None:
            return text, ""
        pieces, pos = [], 0
        while True:
            hold = self._hold_start(text, pos)
            found = self._pattern.search(text, pos)
            # A match starting before the hold is final: nothing longer can start at or before it.
            if found is None or found.start() >= hold:
                pieces.append(text[pos:hold])
                return "".join(pieces), text[hold:]
            pieces += [text[pos : found.start()], REDACTED]
            pos = found.end()

    def finish_live(self, held: str) -> str:
        """The held tail at the stream's end, redacted; a cut-off first part of a value too."""
        if self._pattern is None:
            return held
        return self._trim_partial(self._pattern.sub(REDACTED, held))

    def _hold_start(self, text: str, pos: int) -> int:
        """Where the end of `text` (from `pos` on) could begin a value; len(text) if nowhere."""
        longest = len(self._variants[0]) if self._variants else 0
        for start in range(max(pos, len(text) - longest + 1), len(text)):
            tail = text[start:]
            if any(len(v) > len(tail) and v.startswith(tail) for v in self._variants):
                return start
        return len(text)

    def tree(self, value: Any) -> Any:
        """A JSON tree with every string (keys too) redacted."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(item) for item in value]
        return value


class KnownSecrets:
    """Every secret value this process resolved (most recent MAX_KNOWN), for its own logs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()
        self._redactor = ValueRedactor()

    def add(self, values: Iterable[str]) -> None:
        """Remember values (a no-op for ones already known)."""
        fresh = [v for v in values if v and v not in self._values]
        if not fresh:
            return
        with self._lock:
            for value in fresh:
                self._values[value] = None
            while len(self._values) > MAX_KNOWN:
                self._values.popitem(last=False)
            self._redactor = ValueRedactor(self._values)

    def redact(self, text: str) -> str:
        """`text` without any known value."""
        return self._redactor.text(text)


KNOWN_SECRETS = KnownSecrets()
