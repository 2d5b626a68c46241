"""Opaque page tokens and the page-size rule shared by every list."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import Query

from stellaorch.domain.errors import ValidationError

# Positions are keys of signed 64-bit columns; a number outside them is a forged token.
_INT64 = range(-(2**63), 2**63)
PageSize = Annotated[int, Query(ge=1, le=500, description="items per page (max 500)")]
PageToken = Annotated[str | None, Query(max_length=512, description="from nextPageToken")]


def encode_token(position: list[Any]) -> str:
    """Hide a keyset position in an opaque, URL-safe token."""
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None) -> list[Any] | None:
    """The keyset position behind a token; a token we did not make is a 400."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except ValueError as exc:
        raise ValidationError("page_token is not valid") from exc
    if not isinstance(position, list):
        raise ValidationError("page_token is not valid")
    return position


def decode_position(token: str | None, kinds: tuple[type, ...]) -> tuple[Any, ...] | None:
    """The keyset position behind a token, checked against the element types the list uses."""
    position = decode_token(token)
    if not position:
        return None
    shaped = len(position) == len(kinds) and all(
        _is_kind(v, k) for v, k in zip(position, kinds, strict=False)
    )
    if not shaped:
        raise ValidationError("page_token is not valid")
    return tuple(position)


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    return not isinstance(value, int) or value in _INT64
