"""Hostile spec documents are refused with a clear SpecInvalid, never hang or 500 (issue 9)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stellaorch.domain.errors import SpecInvalid
from stellaorch.domain.limits import MAX_JSON_DEPTH, text_depth_exceeds, value_depth_exceeds
from stellaorch.domain.spec import parse_spec

BILLION_LAUGHS = """\
dagId: lol
version: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
steps: [{id: a, plugin: noop}]
"""


def messages(error: SpecInvalid) -> str:
    """Every problem message of a SpecInvalid, one string."""
    return " | ".join(p["message"] for p in error.details["errors"])


def step(**extra: Any) -> dict[str, Any]:
    """A one-step spec whose step carries `extra` fields."""
    return {"dagId": "d", "version": 1, "steps": [{"id": "a", "plugin": "noop", **extra}]}


def test_alias_expansion_is_bounded() -> None:
    assert len(BILLION_LAUGHS) < 1024
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(BILLION_LAUGHS, fmt="yaml")
    assert "aliases expand" in messages(caught.value)


def test_a_modest_alias_still_works() -> None:
    text = "dagId: d\nversion: 1\nx: &w {seconds: 0}\n"
    text += "steps:\n  - {id: a, plugin: sleep, with: *w}\n"
    with pytest.raises(SpecInvalid) as caught:  # `x` is an unknown top-level field
        parse_spec(text, fmt="yaml")
    assert "aliases" not in messages(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "dagId: d\nversion: 1\ndagId: e\nsteps: [{id: a, plugin: noop}]\n",
        "dagId: d\nversion: 1\nsteps: [{id: a, plugin: noop, id: b}]\n",
    ],
)
def test_duplicate_keys_are_refused(text: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(text, fmt="yaml")
    assert "duplicate key" in messages(caught.value)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 999, 20_000])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_deep_nesting_is_refused_at_every_depth(depth: int, fmt: str) -> None:
    deep = "[" * depth + "]" * depth
    if fmt == "json":
        text = '{"dagId": "d", "version": 1, "steps": [{"id": "a", "plugin": "noop", '
        text += '"with": {"outputs": {"x": ' + deep + "}}}]}"
    else:
        text = "dagId: d\nversion: 1\nsteps:\n- id: a\n  plugin: noop\n  with: {x: " + deep + "}\n"
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(text, fmt=fmt)
    assert "deeper than" in messages(caught.value)


def test_deep_mapping_passed_in_is_refused() -> None:
    value: Any = []
    for _ in range(900):
        value = [value]
    with pytest.raises(SpecInvalid):
        parse_spec(step(**{"with": {"outputs": {"x": value}}}))


def test_depth_scan_ignores_brackets_inside_strings() -> None:
    text = json.dumps({"x": "[" * 500, "y": '\\"[[[', "z": [[1]]}).encode()
    assert not text_depth_exceeds(text)
    assert text_depth_exceeds(b'{"a": "]' + b"[" * 70 + b'"' + b"[" * 70)


def test_value_depth_handles_self_reference_without_recursion() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert value_depth_exceeds(loop)
    assert not value_depth_exceeds({"a": [{"b": [1]}]})


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"concurrency": 2**70}, "concurrency"),
        ({"resources": {"memoryMb": 1e300}}, "memoryMb"),
        ({"resources": {"cpuSeconds": 2**70}}, "cpuSeconds"),
        ({"network": ["example.org:70000"]}, "ports"),
        ({"network": ["a" * 300]}, "network"),
        ({"network": [f"h{i}" for i in range(101)]}, "network"),
        ({"retry": {"maxAttempts": 2, "backoff": {"initialMs": 2**70}}}, "initialMs"),
    ],
)
def test_numbers_and_lengths_out_of_range_are_refused(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(step(**extra))
    details = json.dumps(caught.value.details)
    assert needle in details, details


def test_overlong_version_is_refused() -> None:
    with pytest.raises(SpecInvalid):
        parse_spec({**step(), "version": "1.2.3-" + "a" * 80})


def test_huge_document_is_refused_before_parsing() -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(b"dagId: d\n#" + b"x" * (5 * 1024 * 1024), fmt="yaml")
    assert "larger than" in messages(caught.value)
