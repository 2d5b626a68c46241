"""JSON views of runs, steps and attempts exactly as SPEC §1 names their fields."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from stellaorch.domain.providers import format_utc
from stellaorch.store.runs import RunState

# A run view inlines a step's outputs up to this size, and up to RUN_INLINE_BYTES over all its
# steps; larger outputs read as null with outputsTruncated (GET /runs/{id}/steps/{stepId} has
# them whole), so a run of many large outputs never becomes a response of hundreds of MB.
STEP_INLINE_BYTES = 64 * 1024
RUN_INLINE_BYTES = 1024 * 1024


def _duration_ms(start: int | None, end: int | None) -> int | None:
    return (end - start) // 1000 if start is not None and end is not None else None


def _json_object(text: str | None) -> dict[str, Any] | None:
    """A stored JSON object column (error, plugin identity), or None."""
    return dict(json.loads(text)) if text else None


def run_summary(run: RunState) -> dict[str, Any]:
    """The run without its steps (list views)."""
    return {
        "runId": run.run_id,
        "tenant": run.tenant,
        "dagId": run.dag_id,
        "dagVersion": run.dag_version,
        "runToken": run.run_token,
        "inputsHash": run.inputs_hash,
        "status": run.status,
        "traceId": run.trace_id,
        "trigger": run.trigger,
        "replayOf": run.replay_of,
        "createdUtc": format_utc(run.created_us),
        "startedUtc": format_utc(run.started_us),
        "endedUtc": format_utc(run.ended_us),
        "durationMs": _duration_ms(run.started_us, run.ended_us),
        "outputsHash": run.outputs_hash,
        "error": _json_object(run.error_json),
    }


def attempt_view(row: dict[str, Any]) -> dict[str, Any]:
    """One attempt of a step."""
    return {
        "attempt": row["attempt"],
        "status": row["status"],
        "workerId": row["worker_id"],
        "startedUtc": format_utc(row["started_us"]),
        "endedUtc": format_utc(row["ended_us"]),
        "durationMs": _duration_ms(row["started_us"], row["ended_us"]),
        "inputsHash": row["inputs_hash"],
        "outputsHash": row["outputs_hash"],
        "logsRef": row["logs_ref"],
        "error": _json_object(row["error_json"]),
        "plugin": _json_object(row.get("plugin_json")),
    }


def _newest_plugin(attempts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The plugin identity of the newest attempt that recorded one (attempts oldest first)."""
    for row in reversed(attempts):
        if row.get("plugin_json"):
            return _json_object(row["plugin_json"])
    return None


def step_view(
    row: dict[str, Any], attempts: list[dict[str, Any]], *, inline: bool = True
) -> dict[str, Any]:
    """One step execution with its attempts (`inline` False: outputs left out, flagged)."""
    text = row["outputs_json"]
    return {
        "stepId": row["step_id"],
        "status": row["status"],
        "attempt": row["attempt"],
        "startedUtc": format_utc(row["started_us"]),
        "endedUtc": format_utc(row["ended_us"]),
        "durationMs": _duration_ms(row["started_us"], row["ended_us"]),
        "inputsHash": row["inputs_hash"],
        "outputsHash": row["outputs_hash"],
        "outputs": json.loads(text) if text and inline else None,
        "outputsTruncated": bool(text) and not inline,
        "logsRef": row["logs_ref"],
        "metricsRef": None,
        "error": _json_object(row["error_json"]),
        "plugin": _newest_plugin(attempts),
        "attempts": [attempt_view(a) for a in attempts],
    }


def run_view(
    run: RunState,
    steps: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    *,
    whole: bool = False,
) -> dict[str, Any]:
    """The run with inputs, step states, attempts and hashes (`whole`: every output inline)."""
    by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in attempts:
        by_step[row["step_id"]].append(row)
    view = run_summary(run)
    view["inputs"] = json.loads(run.inputs_json)
    if whole:
        view["steps"] = [step_view(s, by_step[s["step_id"]]) for s in steps]
    else:
        view["steps"] = steps_view(steps, by_step)
    return view


def steps_view(
    steps: list[dict[str, Any]], attempts: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Step views in order, inlining outputs within the STEP/RUN_INLINE_BYTES budgets."""
    views, budget = [], RUN_INLINE_BYTES
    for row in steps:
        size = len((row["outputs_json"] or "").encode("utf-8"))
        inline = size <= STEP_INLINE_BYTES and size <= budget
        budget -= size if inline else 0
        views.append(step_view(row, attempts.get(row["step_id"], []), inline=inline))
    return views


def mark_metrics(
    steps: list[dict[str, Any]], refs: dict[tuple[str, int], str]
) -> list[dict[str, Any]]:
    """Fill `metricsRef` of each step view (its current attempt's) and of each attempt."""
    for view in steps:
        view["metricsRef"] = refs.get((view["stepId"], view["attempt"]))
        for attempt in view.get("attempts") or []:
            attempt["metricsRef"] = refs.get((view["stepId"], attempt["attempt"]))
    return steps


def mark_retries(steps: list[dict[str, Any]], due: dict[str, int]) -> list[dict[str, Any]]:
    """Add `nextAttemptUtc` to each step view waiting on a retry's backoff (`due` by step)."""
    for view in steps:
        if view["stepId"] in due:
            view["nextAttemptUtc"] = format_utc(due[view["stepId"]])
    return steps
