"""What a run's ledger says its state must be, and the check of a run view against it.

The ledger is the record; the `runs` and `step_executions` rows are a projection of it kept
for fast reads. Verification replays the entries of one (already chain-verified) run and
compares the result with the run's view — the same JSON document `GET /runs/{id}` and the
ledger export carry — so the store check and the offline export check are one rule. It also
re-hashes the content the entries name by hash: inputs, every step's outputs, and the run's
outputsHash, which is computed from its steps' outputs hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stellaorch.domain.canonical import hash_json

# Fields of the run view that must equal what the run's `run.created` entry recorded.
_CREATED_FIELDS = ("dagVersion", "runToken", "inputsHash", "trigger", "replayOf")
# Fields of the run view that must equal the identity every entry of the run carries.
_IDENTITY_FIELDS = ("tenant", "dagId", "traceId")


@dataclass
class StepProjection:
    """One step as its entries tell it."""

    status: str = "pending"
    attempt: int = 0  # the newest attempt that ran (leased), 0 before any
    outputs_hash: str | None = None  # of the newest success
    plugin: Any = None  # identity of the code the newest attempt that recorded one ran


@dataclass
class RunProjection:
    """One run as its entries tell it."""

    status: str | None = None
    created: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    outputs_hash: str | None = None
    error: Any = None
    steps: dict[str, StepProjection] = field(default_factory=dict)


def project(events: Iterable[Mapping[str, Any]]) -> RunProjection:
    """Replay a run's entries, oldest first, into the state they imply."""
    run = RunProjection()
    for event in events:
        raw = event.get("data")
        data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if not run.identity:
            run.identity = {name: event.get(name) for name in _IDENTITY_FIELDS}
        step_id = event.get("stepId")
        if step_id is None:
            _apply_run_entry(run, event, data)
        else:
            _apply_step_entry(run.steps.setdefault(str(step_id), StepProjection()), event, data)
    return run


def _apply_run_entry(run: RunProjection, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    run.status = event.get("status")
    if event.get("type") == "run.created":
        run.created = {name: data.get(name) for name in _CREATED_FIELDS}
    if run.status == "completed":
        run.outputs_hash = data.get("outputsHash")
    if run.status == "failed":
        run.error = data.get("error")


def _apply_step_entry(
    step: StepProjection, event: Mapping[str, Any], data: Mapping[str, Any]
) -> None:
    step.status = str(event.get("status"))
    attempt = event.get("attempt")
    if step.status == "running" and isinstance(attempt, int):
        step.attempt = attempt
    if step.status == "succeeded":
        step.outputs_hash = data.get("outputsHash")
    if data.get("plugin") is not None:  # entries from before identities were recorded: none
        step.plugin = data["plugin"]


def state_problem(view: Mapping[str, Any], events: list[Mapping[str, Any]]) -> str | None:
    """The first way the run view disagrees with its entries or its own hashes, or None."""
    run_id = view.get("runId")
    said = project(events)
    problem = _run_problem(view, said) or _steps_problem(view, said) or _content_problem(view)
    return f"run {run_id}: {problem}" if problem else None


def _run_problem(view: Mapping[str, Any], said: RunProjection) -> str | None:
    if view.get("status") != said.status:
        return f"status {view.get('status')!r} but its ledger says {said.status!r}"
    for name in _IDENTITY_FIELDS:
        if view.get(name) != said.identity.get(name):
            return f"{name} {view.get(name)!r} but its ledger says {said.identity.get(name)!r}"
    for name in _CREATED_FIELDS:
        if view.get(name) != said.created.get(name):
            return f"{name} {view.get(name)!r} but its ledger says {said.created.get(name)!r}"
    if said.status == "completed" and view.get("outputsHash") != said.outputs_hash:
        return f"outputsHash {view.get('outputsHash')!r} but its ledger says {said.outputs_hash!r}"
    if said.status == "failed" and (view.get("error") or None) != (said.error or None):
        return "error differs from the one its ledger recorded"
    return None


def _content_problem(view: Mapping[str, Any]) -> str | None:
    """Inputs and the run's outputsHash recomputed from what the view holds."""
    if hash_json(view.get("inputs")) != view.get("inputsHash"):
        return "inputs do not match inputsHash"
    if view.get("status") != "completed":
        return None
    steps = [s for s in view.get("steps") or [] if isinstance(s, Mapping)]
    hashes = {s.get("stepId"): s.get("outputsHash") for s in steps if s.get("outputsHash")}
    if hash_json(hashes) != view.get("outputsHash"):
        return "outputsHash does not match the outputs hashes of its steps"
    return None


def _steps_problem(view: Mapping[str, Any], said: RunProjection) -> str | None:
    listed: set[str] = set()
    for step in view.get("steps") or []:
        if not isinstance(step, Mapping):
            return "a step is not a JSON object"
        step_id = str(step.get("stepId"))
        listed.add(step_id)
        problem = _step_problem(step, said.steps.get(step_id, StepProjection()))
        if problem is not None:
            return f"step {step_id} {problem}"
    missing = sorted(set(said.steps) - listed)
    if missing:
        return f"step {missing[0]} is in its ledger but has no step record"
    return None


def _step_problem(step: Mapping[str, Any], said: StepProjection) -> str | None:
    if step.get("status") != said.status:
        return f"is {step.get('status')!r} but its ledger says {said.status!r}"
    if step.get("attempt") != said.attempt:
        return f"is at attempt {step.get('attempt')!r} but its ledger says {said.attempt}"
    if step.get("plugin") != said.plugin:
        return f"ran plugin {step.get('plugin')!r} but its ledger says {said.plugin!r}"
    if said.status != "succeeded":
        return None
    if step.get("outputsHash") != said.outputs_hash:
        return f"outputsHash {step.get('outputsHash')!r} but its ledger says {said.outputs_hash!r}"
    if hash_json(step.get("outputs")) != said.outputs_hash:  # views verified carry them whole
        return "outputs do not match their outputsHash"
    return None
