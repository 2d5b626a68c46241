"""Status vocabularies of runs, steps and attempts, and the transitions each allows."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from stellaorch.domain.errors import InvalidTransition


class RunStatus(StrEnum):
    """Where a run is in its life; completed, failed and cancelled are final."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """Where one step of a run is; succeeded, failed, cancelled and skipped are final."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class AttemptStatus(StrEnum):
    """How one attempt of a step ended; every status but running is final."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    CANCELLED = "cancelled"


TERMINAL_RUN: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
TERMINAL_STEP: frozenset[StepStatus] = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.SKIPPED}
)
TERMINAL_ATTEMPT: frozenset[AttemptStatus] = frozenset(set(AttemptStatus) - {AttemptStatus.RUNNING})

RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = MappingProxyType(
    {
        # queued -> completed/failed directly: a run can end before any step starts
        # (every step disabled, or the version turned out unrunnable).
        RunStatus.QUEUED: frozenset({RunStatus.RUNNING, *TERMINAL_RUN}),
        RunStatus.RUNNING: TERMINAL_RUN,
        **{status: frozenset() for status in TERMINAL_RUN},
    }
)

STEP_TRANSITIONS: Mapping[StepStatus, frozenset[StepStatus]] = MappingProxyType(
    {
        # pending -> succeeded: a resumed replay keeps the step's outputs from the run it
        # replays (entry `step.reused`), without executing it.
        StepStatus.PENDING: frozenset(
            {StepStatus.QUEUED, StepStatus.SKIPPED, StepStatus.CANCELLED, StepStatus.SUCCEEDED}
        ),
        StepStatus.QUEUED: frozenset(
            {StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELLED}
        ),
        # running -> queued is a retry after a failed, timed-out or lost attempt.
        StepStatus.RUNNING: frozenset(
            {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.QUEUED}
        ),
        **{status: frozenset() for status in TERMINAL_STEP},
    }
)

ATTEMPT_TRANSITIONS: Mapping[AttemptStatus, frozenset[AttemptStatus]] = MappingProxyType(
    {
        AttemptStatus.RUNNING: TERMINAL_ATTEMPT,
        **{status: frozenset() for status in TERMINAL_ATTEMPT},
    }
)

_S = TypeVar("_S", RunStatus, StepStatus, AttemptStatus)


def check_run_transition(old: RunStatus, new: RunStatus) -> None:
    """Raise InvalidTransition unless a run may go from `old` to `new`."""
    _check("run", RUN_TRANSITIONS, old, new)


def check_step_transition(old: StepStatus, new: StepStatus) -> None:
    """Raise InvalidTransition unless a step may go from `old` to `new`."""
    _check("step", STEP_TRANSITIONS, old, new)


def check_attempt_transition(old: AttemptStatus, new: AttemptStatus) -> None:
    """Raise InvalidTransition unless an attempt may go from `old` to `new`."""
    _check("attempt", ATTEMPT_TRANSITIONS, old, new)


def _check(kind: str, table: Mapping[_S, frozenset[_S]], old: _S, new: _S) -> None:
    """Look the change up in `table`; the message names both ends and what was allowed."""
    allowed = table[old]
    if new not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing (terminal)"
        raise InvalidTransition(
            f"{kind} status cannot change from {old.value!r} to {new.value!r}; "
            f"allowed from {old.value!r}: {options}",
            details={"kind": kind, "from": old.value, "to": new.value},
        )
