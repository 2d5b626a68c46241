"""Canonical JSON (sorted keys, no whitespace, UTF-8, shortest numbers) and SHA-256 over it."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def normalise(value: Any) -> Any:
    """Turn integral floats into ints so 1.0 and 1 hash alike (shortest number form)."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Serialise `value` in canonical form; raises ValueError for NaN/Infinity."""
    return _ENCODER.encode(normalise(value))


def encode_prepared(value: Any) -> str:
    """Canonical form of a value whose numbers are already normalised (hot paths only)."""
    return _ENCODER.encode(value)


def sha256_hex(data: bytes | str) -> str:
    """Lowercase hex SHA-256 of bytes (str is encoded as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def hash_json(value: Any) -> str:
    """`sha256:<hex>` of the canonical form of a JSON value."""
    return "sha256:" + sha256_hex(canonical_json(value))
