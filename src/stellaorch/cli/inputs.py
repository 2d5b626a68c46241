"""Reading a run's inputs file: a JSON object, or an error naming the file (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

from stellaorch.domain.errors import InputsInvalid
from stellaorch.domain.limits import MAX_JSON_DEPTH, text_depth_exceeds


def read_inputs(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else is InputsInvalid naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputsInvalid(f"cannot read inputs file {path}: {exc.strerror}") from None
    if text_depth_exceeds(text.encode()):
        raise InputsInvalid(f"inputs file {path} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InputsInvalid(f"inputs file {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise InputsInvalid(f"inputs file {path} must hold a JSON object, not a {kind}")
    return document


def _reject_constant(name: str) -> NoReturn:
    """NaN and Infinity are not JSON, though Python's parser accepts them."""
    raise ValueError(f"{name} is not a JSON value")
