"""The console's Jinja2 environment and the filters its templates use (pure formatting)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

PREFIX = "/console"
MAX_CELL_CHARS = 200
ARTIFACT_REF = re.compile(r"sha256:[0-9a-f]{64}")
MAX_REFS = 20  # artifact links shown per step; outputs may name many more
MAX_REF_DEPTH = 8
# Icon and text for every status a badge shows; the icon is decoration, the text is the label.
BADGES = {
    "queued": "◷",
    "pending": "◷",
    "running": "▶",
    "completed": "✓",
    "succeeded": "✓",
    "failed": "✗",
    "cancelled": "⊘",
    "skipped": "↷",
    "active": "▶",
    "paused": "❚❚",
    "enabled": "✓",
    "disabled": "⊘",
}


def as_json(value: Any, keep: int = MAX_CELL_CHARS) -> str:
    """A value as compact JSON for a table cell, cut to `keep` characters ("—" for None)."""
    if value is None:
        return "—"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= keep else text[: keep - 1] + "…"


def duration(ms: Any) -> str:
    """A duration for people: ms below a second, then seconds, minutes, hours."""
    if ms is None:
        return "—"
    value = float(ms)
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    if value < 3_600_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"


def short(value: Any, keep: int = 12) -> str:
    """A long id or hash cut for a table cell (the full value goes in a title)."""
    text = "" if value is None else str(value)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def artifact_refs(value: Any) -> list[str]:
    """The `sha256:` references found in a step's outputs (first MAX_REFS, in order)."""
    found: list[str] = []

    def walk(item: Any, depth: int) -> None:
        if len(found) >= MAX_REFS or depth > MAX_REF_DEPTH:
            return
        if isinstance(item, str) and ARTIFACT_REF.fullmatch(item) and item not in found:
            found.append(item)
        elif isinstance(item, dict):
            for child in item.values():
                walk(child, depth + 1)
        elif isinstance(item, list):
            for child in item:
                walk(child, depth + 1)

    walk(value, 0)
    return found


templates = Environment(
    loader=PackageLoader("stellaorch.console", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["duration"] = duration
templates.filters["short"] = short
templates.globals["badge_icon"] = lambda status: BADGES.get(str(status), "•")
templates.globals["PREFIX"] = PREFIX
templates.filters["as_json"] = as_json
templates.filters["pathpart"] = lambda value: quote(str(value), safe="")
templates.globals["artifact_refs"] = artifact_refs
