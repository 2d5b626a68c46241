"""What differs between two runs: DAG version and spec, inputs by key, and each step's record.

The input is two run views (as `GET /runs/{id}` serves them, each step with the `secrets`
{name: version} its last attempt resolved, read from the ledger) and their DAG versions' spec
hashes. The output lists every difference as `{field, a, b}` in a fixed order: the run's
fields, then inputs by key (sorted), then steps by id (sorted), each step's fields in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Run fields compared, as (field name in the diff, path in the run view).
_RUN_FIELDS = (
    ("dagId", "dagId"),
    ("dagVersion", "dagVersion"),
    ("specHash", "specHash"),
    ("inputsHash", "inputsHash"),
    ("status", "status"),
    ("errorCode", "error.code"),
    ("outputsHash", "outputsHash"),
)
STEP_FIELDS = ("status", "plugin", "attempts", "errorCodes", "outputsHash", "secrets")


def diff_runs(
    a: Mapping[str, Any], b: Mapping[str, Any], spec_hashes: tuple[str, str]
) -> dict[str, Any]:
    """The comparison document of run `a` and run `b` (see the module docstring)."""
    side_a = {**a, "specHash": spec_hashes[0]}
    side_b = {**b, "specHash": spec_hashes[1]}
    differences = [
        {"field": name, "a": _at(side_a, path), "b": _at(side_b, path)}
        for name, path in _RUN_FIELDS
        if _at(side_a, path) != _at(side_b, path)
    ]
    inputs = _inputs_diff(a.get("inputs") or {}, b.get("inputs") or {})
    differences += inputs.pop("rows")
    steps = _steps_diff(a.get("steps") or [], b.get("steps") or [])
    for step in steps:
        differences += [
            {"field": f"steps.{step['stepId']}.{name}", "a": _field(step, "a", name),
             "b": _field(step, "b", name)}
            for name in step["differs"]
        ]  # fmt: skip
    return {
        "runA": a.get("runId"),
        "runB": b.get("runId"),
        "identical": not differences,
        "differences": differences,
        "inputs": inputs,
        "steps": steps,
    }


def _at(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, None where it is absent."""
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _inputs_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Input keys only in b (`added`), only in a (`removed`), in both with other values."""
    added = sorted(set(b) - set(a))
    removed = sorted(set(a) - set(b))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    rows = [
        {"field": f"inputs.{key}", "a": a.get(key), "b": b.get(key)}
        for key in sorted({*added, *removed, *changed})
    ]
    return {"added": added, "removed": removed, "changed": changed, "rows": rows}


def _step_record(step: Mapping[str, Any]) -> dict[str, Any]:
    """What is compared of one step: status, plugin, attempts, error codes, outputs hash, and
    the secret versions its last attempt resolved (`secrets`, {name: version}, never a value)."""
    attempts = [t for t in step.get("attempts") or [] if isinstance(t, Mapping)]
    return {
        "status": step.get("status"),
        "plugin": step.get("plugin"),
        "attempts": len(attempts),
        "errorCodes": [_at(t, "error.code") for t in attempts if t.get("error")],
        "outputsHash": step.get("outputsHash"),
        "secrets": dict(step.get("secrets") or {}),
    }


def _steps_diff(a: list[Any], b: list[Any]) -> list[dict[str, Any]]:
    """One entry per step id of either run, sorted: both records and the fields that differ."""
    in_a = {s["stepId"]: _step_record(s) for s in a if isinstance(s, Mapping)}
    in_b = {s["stepId"]: _step_record(s) for s in b if isinstance(s, Mapping)}
    steps = []
    for step_id in sorted({*in_a, *in_b}):
        one, two = in_a.get(step_id), in_b.get(step_id)
        if one is None or two is None:
            differs = list(STEP_FIELDS)
        else:
            differs = [name for name in STEP_FIELDS if one[name] != two[name]]
        steps.append({"stepId": step_id, "a": one, "b": two, "differs": differs})
    return steps


def _field(step: Mapping[str, Any], side: str, name: str) -> Any:
    """One field of one side of a step entry (None when the step is not in that run)."""
    record = step[side]
    return None if record is None else record[name]
