"""The console's Jinja2 environment and the filters its templates use (pure formatting)."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

PREFIX = "/console"
MAX_CELL_CHARS = 200
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
