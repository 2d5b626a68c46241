"""Resolve `module:attribute` references to Python objects (`worker run`, `dag render`)."""

from __future__ import annotations

import importlib
import os
import sys

from stellaorch.domain.errors import UsageInvalid


def load_object(target: str) -> object:
    """The object `module:attribute` names, the module imported from the current directory
    or the Python path; UsageInvalid (one line) when the reference resolves to nothing."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageInvalid(f"expected module:attribute, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a module's own code may raise anything while it is imported
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageInvalid(f"cannot import {module_name!r}: {reason}") from exc
    value = module
    for name in attribute.split("."):
        if not hasattr(value, name):
            raise UsageInvalid(f"module {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, name)
    return value
