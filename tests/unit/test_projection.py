"""The ledger projection and the check of a run view against it."""

from __future__ import annotations

from typing import Any

from stellaorch.domain.canonical import hash_json
from stellaorch.domain.projection import project, state_problem

IDENTITY = {"tenant": "acme", "dagId": "d", "traceId": "t" * 32}
INPUTS = {"day": "monday"}
OUTPUTS = {"rows": 3}


def entry(kind: str, status: str, step: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "status": status, "stepId": step, **IDENTITY, **extra}


def events() -> list[dict[str, Any]]:
    created = {
        "dagVersion": "1.0.0",
        "runToken": "tok",
        "inputsHash": hash_json(INPUTS),
        "trigger": "api",
        "replayOf": None,
    }
    outputs_hash = hash_json(OUTPUTS)
    return [
        entry("run.created", "queued", data=created),
        entry("step.queued", "queued", "a", attempt=1),
        entry("run.started", "running"),
        entry("step.running", "running", "a", attempt=1),
        entry("step.retrying", "queued", "a", attempt=1),
        entry("step.running", "running", "a", attempt=2),
        entry("step.succeeded", "succeeded", "a", attempt=2, data={"outputsHash": outputs_hash}),
        entry("run.completed", "completed", data={"outputsHash": hash_json({"a": outputs_hash})}),
    ]


def view() -> dict[str, Any]:
    outputs_hash = hash_json(OUTPUTS)
    return {
        "runId": "r1",
        **IDENTITY,
        "status": "completed",
        "dagVersion": "1.0.0",
        "runToken": "tok",
        "inputs": INPUTS,
        "inputsHash": hash_json(INPUTS),
        "trigger": "api",
        "replayOf": None,
        "outputsHash": hash_json({"a": outputs_hash}),
        "steps": [
            {
                "stepId": "a",
                "status": "succeeded",
                "attempt": 2,
                "outputs": OUTPUTS,
                "outputsHash": outputs_hash,
            }
        ],
    }


def test_projection_follows_the_newest_entry_of_each_step() -> None:
    said = project(events())

    assert said.status == "completed"
    assert said.steps["a"].status == "succeeded"
    assert said.steps["a"].attempt == 2
    assert said.created["runToken"] == "tok"


def test_a_view_that_matches_its_entries_has_no_problem() -> None:
    assert state_problem(view(), events()) is None


def test_each_edited_field_is_a_problem() -> None:
    edits: list[tuple[str, Any, str]] = [
        ("status", "failed", "status 'failed'"),
        ("tenant", "other", "tenant 'other'"),
        ("runToken", "x", "runToken 'x'"),
        ("inputs", {"day": "sunday"}, "inputs do not match"),
        ("outputsHash", "sha256:" + "0" * 64, "outputsHash"),
    ]
    for name, value, said in edits:
        doc = view()
        doc[name] = value
        problem = state_problem(doc, events())
        assert problem is not None and said in problem, (name, problem)


def test_each_edited_step_field_is_a_problem() -> None:
    edits: list[tuple[str, Any, str]] = [
        ("status", "failed", "step a is 'failed'"),
        ("attempt", 1, "step a is at attempt 1"),
        ("outputs", {"rows": 4}, "step a outputs do not match"),
        ("outputsHash", hash_json({"rows": 4}), "step a outputsHash"),
    ]
    for name, value, said in edits:
        doc = view()
        doc["steps"][0][name] = value
        problem = state_problem(doc, events())
        assert problem is not None and said in problem, (name, problem)


def test_a_step_missing_from_the_view_is_a_problem() -> None:
    doc = view()
    doc["steps"] = []

    problem = state_problem(doc, events())

    assert problem is not None and "step a is in its ledger" in problem


def test_a_failed_run_must_carry_the_recorded_error() -> None:
    failing = [*events()[:-1], entry("run.failed", "failed", data={"error": {"code": "X"}})]
    doc = view()
    doc["status"] = "failed"

    assert state_problem({**doc, "error": {"code": "X"}}, failing) is None
    problem = state_problem({**doc, "error": {"code": "Y"}}, failing)
    assert problem is not None and "error differs" in problem
