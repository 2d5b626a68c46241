"""Building blocks for publish-time checks of plugin parameters (`ParamsCheck`).

At publish a parameter may still be a reference: a string that is exactly one `${…}` takes
its value's JSON type at run time, so its type and range can only be checked then. Every
other value is static and is checked now with the same parser the plugin runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stellaorch.domain.errors import StepFailed
from stellaorch.domain.templating import lone_reference, with_placeholders
from stellaorch.plugins.base import ParamProblem


def unknown_keys(
    plugin: str, params: Mapping[str, Any], known: Iterable[str]
) -> list[ParamProblem]:
    """One problem per parameter the plugin does not take (a typo would be ignored silently)."""
    allowed = sorted(known)
    return [
        (str(key), f"{plugin} takes no parameter {key!r}; known: {', '.join(allowed)}")
        for key in sorted(params, key=str)
        if key not in allowed
    ]


def parsed_at(
    key: str, params: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], object]
) -> list[ParamProblem]:
    """Run the plugin's own `parse(params)` unless `params[key]` is a lone reference."""
    if lone_reference(params.get(key)) is not None:
        return []
    try:
        parse(params)
    except StepFailed as exc:
        return [(key, exc.message)]
    return []


def static_problems(
    params: Mapping[str, Any], parsers: Mapping[str, Callable[[object], object]]
) -> list[ParamProblem]:
    """Run `parsers[key](value)` on each present field that is not a lone reference.

    References inside a value are rendered as placeholder text first, so a URL or an argv
    item that embeds one is checked for its shape.
    """
    problems: list[ParamProblem] = []
    for key, parse in parsers.items():
        if key not in params or lone_reference(params[key]) is not None:
            continue
        try:
            parse(with_placeholders(params[key], "placeholder"))
        except StepFailed as exc:
            problems.append((key, exc.message))
    return problems
