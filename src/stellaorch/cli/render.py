"""`--output json|ndjson|table` for API resources, with one fixed column order per resource."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stellaorch.cli.output import print_json, say


class OutputFormat(StrEnum):
    """How client commands print what the API returned."""

    JSON = "json"
    NDJSON = "ndjson"
    TABLE = "table"


# (header, field) per resource; a dotted field reads a nested object (error.code). The order
# is part of the CLI's interface: scripts may cut columns by position, so only append.
COLUMNS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "dag": (
        ("DAG_ID", "dagId"),
        ("VERSION", "version"),
        ("ENABLED", "enabled"),
        ("SPEC_HASH", "specHash"),
        ("CREATED", "createdUtc"),
        ("SIGNED_BY", "signedBy"),
    ),
    "bundle": (
        ("NAME", "name"),
        ("VERSION", "version"),
        ("DIGEST", "digest"),
        ("SIGNED_BY", "signedBy"),
        ("SIZE", "sizeBytes"),
        ("IMPORTED", "importedUtc"),
    ),
    "bundle-check": (
        ("NAME", "name"),
        ("VERSION", "version"),
        ("VERIFIED", "verified"),
        ("DIGEST", "digest"),
        ("ERROR", "error.code"),
    ),
    "trusted-key": (("KEY_ID", "keyId"), ("FILE", "file")),
    "run": (
        ("RUN_ID", "runId"),
        ("DAG_ID", "dagId"),
        ("VERSION", "dagVersion"),
        ("STATUS", "status"),
        ("TRIGGER", "trigger"),
        ("CREATED", "createdUtc"),
        ("STARTED", "startedUtc"),
        ("ENDED", "endedUtc"),
        ("DURATION_MS", "durationMs"),
        ("ERROR", "error.code"),
    ),
    "step": (
        ("STEP_ID", "stepId"),
        ("STATUS", "status"),
        ("ATTEMPT", "attempt"),
        ("STARTED", "startedUtc"),
        ("ENDED", "endedUtc"),
        ("DURATION_MS", "durationMs"),
        ("OUTPUTS_HASH", "outputsHash"),
        ("ERROR", "error.code"),
        ("NEXT_ATTEMPT", "nextAttemptUtc"),
    ),
    "log": (("ATTEMPT", "attempt"), ("LINE", "line")),
    "run-log": (("STEP", "stepId"), ("ATTEMPT", "attempt"), ("LINE", "line")),
    "difference": (("FIELD", "field"), ("A", "a"), ("B", "b")),
    "manifest": (
        ("COUNT", "count"),
        ("SHA256", "sha256"),
        ("ROOT_HASH", "rootHash"),
        ("CHECKPOINTS", "checkpoints"),
        ("FILE", "file"),
    ),
    "export": (
        ("OUT", "out"),
        ("LEDGER", "ledger"),
        ("CHECKPOINTS", "checkpoints"),
        ("AUDIT", "audit"),
        ("LOGS", "logs"),
        ("ROOT_HASH", "rootHash"),
    ),
    "kitverify": (
        ("OK", "ok"),
        ("LEDGER", "ledger"),
        ("CHECKPOINTS", "checkpoints"),
        ("AUDIT", "audit"),
        ("LOGS", "logs"),
        ("SIGNED_BY", "signedBy"),
        ("PROBLEM", "problem"),
    ),
    "checkpoint": (
        ("WRITTEN", "written"),
        ("SEQ", "checkpoint.seq"),
        ("TIMESTAMP", "checkpoint.timestamp"),
        ("ENTRIES", "checkpoint.entries"),
        ("CHECKPOINT_HASH", "checkpointHash"),
    ),
    "verify": (
        ("OK", "ok"),
        ("COUNT", "count"),
        ("CHECKPOINTS", "checkpoints"),
        ("LINE", "line"),
        ("PROBLEM", "problem"),
        ("FILE", "file"),
    ),
}


def compact(document: Any) -> str:
    """One line of JSON, as NDJSON wants it."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def cell(document: Mapping[str, Any], field: str) -> str:
    """The text of one table cell; absent values show as `-`."""
    value: Any = document
    for part in field.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else compact(value)


def table_lines(
    columns: Sequence[tuple[str, str]], items: Sequence[Mapping[str, Any]]
) -> list[str]:
    """A header and one line per item, columns padded and separated by two spaces.

    Rich lays the table out: no borders, no styles, no wrapping and nothing cut, on a console
    exactly as wide as the table, so the text is the same on a terminal and in a pipe.
    """
    rows = [[Text(cell(item, field)) for _, field in columns] for item in items]
    headers = [Text(header) for header, _ in columns]
    widths = [max(c.cell_len for c in column) for column in zip(headers, *rows, strict=True)]
    table = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, header_style=None)
    for header, width in zip(headers, widths, strict=True):
        # A fixed width is the longest cell: Rich then needs no measuring pass of its own.
        table.add_column(header, width=width, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*row)
    console = Console(
        file=io.StringIO(),
        width=max(sum(widths) + 2 * (len(widths) - 1), 1),
        color_system=None,
        force_terminal=False,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
    )
    with console.capture() as captured:
        console.print(table)
    return [line.rstrip() for line in captured.get().splitlines()]


class Printer:
    """Prints API documents on stdout in the chosen format."""

    columns: Mapping[str, Sequence[tuple[str, str]]] = COLUMNS

    def __init__(self, fmt: OutputFormat) -> None:
        self.fmt = fmt

    def one(self, kind: str, document: Mapping[str, Any]) -> None:
        """A single resource: pretty JSON, one NDJSON line, or a one-row table."""
        if self.fmt is OutputFormat.JSON:
            print_json(document)
        elif self.fmt is OutputFormat.NDJSON:
            say(compact(document))
        else:
            self._table(kind, [document])

    def listing(self, kind: str, document: Mapping[str, Any]) -> None:
        """A list response (`items`, maybe `nextPageToken`): JSON as is, else its items."""
        items = document.get("items") or []
        if self.fmt is OutputFormat.JSON:
            print_json(document)
        elif self.fmt is OutputFormat.NDJSON:
            for item in items:
                say(compact(item))
        else:
            self._table(kind, items)

    def run_with_steps(self, view: Mapping[str, Any]) -> None:
        """A run; as a table, its row and then a table of its steps."""
        if self.fmt is not OutputFormat.TABLE:
            self.one("run", view)
            return
        self._table("run", [view])
        steps = view.get("steps")
        if isinstance(steps, list) and steps:
            say("")
            self._table("step", steps)

    def differences(self, document: Mapping[str, Any]) -> None:
        """A run diff: JSON as is, one NDJSON line per difference, or a FIELD/A/B table."""
        rows = document.get("differences") or []
        if self.fmt is OutputFormat.JSON:
            print_json(document)
        elif self.fmt is OutputFormat.NDJSON:
            for row in rows:
                say(compact(row))
        elif rows:
            self._table("difference", rows)
        else:
            say(f"runs {document.get('runA')} and {document.get('runB')} do not differ")

    def _table(self, kind: str, items: Sequence[Mapping[str, Any]]) -> None:
        for line in table_lines(self.columns[kind], items):
            say(line)
