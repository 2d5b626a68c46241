"""Status machines of runs, steps and attempts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.errors import InvalidTransition
from stellaorch.domain.status import (
    ATTEMPT_TRANSITIONS,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    TERMINAL_RUN,
    TERMINAL_STEP,
    AttemptStatus,
    RunStatus,
    StepStatus,
    check_attempt_transition,
    check_run_transition,
    check_step_transition,
)

MACHINES: list[tuple[type[StrEnum], Mapping[Any, frozenset[Any]], Callable[[Any, Any], None]]] = [
    (RunStatus, RUN_TRANSITIONS, check_run_transition),
    (StepStatus, STEP_TRANSITIONS, check_step_transition),
    (AttemptStatus, ATTEMPT_TRANSITIONS, check_attempt_transition),
]


def _allowed(check: Callable[[Any, Any], None], old: Any, new: Any) -> bool:
    try:
        check(old, new)
    except InvalidTransition:
        return False
    return True


def test_vocabularies_match_the_specification() -> None:
    assert [s.value for s in RunStatus] == ["queued", "running", "completed", "failed", "cancelled"]
    assert [s.value for s in StepStatus] == [
        "pending",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "skipped",
    ]
    assert {s.value for s in AttemptStatus} == {
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "lost",
        "cancelled",
    }


@pytest.mark.parametrize(("enum", "table", "check"), MACHINES)
def test_every_status_has_a_row_in_its_table(enum: Any, table: Any, check: Any) -> None:
    assert set(table) == set(enum)


def test_queued_run_may_start() -> None:
    check_run_transition(RunStatus.QUEUED, RunStatus.RUNNING)


def test_queued_run_may_finish_without_starting() -> None:
    check_run_transition(RunStatus.QUEUED, RunStatus.COMPLETED)


def test_running_run_cannot_go_back_to_queued() -> None:
    with pytest.raises(InvalidTransition):
        check_run_transition(RunStatus.RUNNING, RunStatus.QUEUED)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_RUN))
def test_terminal_run_never_changes(terminal: RunStatus) -> None:
    assert RUN_TRANSITIONS[terminal] == frozenset()


def test_running_step_may_be_requeued_for_a_retry() -> None:
    check_step_transition(StepStatus.RUNNING, StepStatus.QUEUED)


def test_pending_step_may_be_skipped() -> None:
    check_step_transition(StepStatus.PENDING, StepStatus.SKIPPED)


def test_pending_step_cannot_run_before_being_queued() -> None:
    with pytest.raises(InvalidTransition):
        check_step_transition(StepStatus.PENDING, StepStatus.RUNNING)


def test_running_step_cannot_be_skipped() -> None:
    with pytest.raises(InvalidTransition):
        check_step_transition(StepStatus.RUNNING, StepStatus.SKIPPED)


def test_succeeded_step_cannot_fail() -> None:
    with pytest.raises(InvalidTransition):
        check_step_transition(StepStatus.SUCCEEDED, StepStatus.FAILED)


@pytest.mark.parametrize("end", ["succeeded", "failed", "timed_out", "lost", "cancelled"])
def test_running_attempt_may_end_any_way(end: str) -> None:
    check_attempt_transition(AttemptStatus.RUNNING, AttemptStatus(end))


def test_lost_attempt_cannot_succeed_later() -> None:
    with pytest.raises(InvalidTransition):
        check_attempt_transition(AttemptStatus.LOST, AttemptStatus.SUCCEEDED)


def test_same_status_is_not_a_transition() -> None:
    with pytest.raises(InvalidTransition):
        check_run_transition(RunStatus.RUNNING, RunStatus.RUNNING)


def test_error_names_both_statuses() -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_run_transition(RunStatus.COMPLETED, RunStatus.RUNNING)
    assert "'completed'" in caught.value.message and "'running'" in caught.value.message
    assert caught.value.code == "INVALID_TRANSITION"


def test_terminal_sets_name_the_final_statuses() -> None:
    assert {s.value for s in TERMINAL_RUN} == {"completed", "failed", "cancelled"}
    assert {s.value for s in TERMINAL_STEP} == {"succeeded", "failed", "cancelled", "skipped"}


@pytest.mark.parametrize(("enum", "table", "check"), MACHINES)
@given(data=st.data())
def test_check_agrees_with_the_table(
    enum: Any, table: Any, check: Any, data: st.DataObject
) -> None:
    old, new = data.draw(st.sampled_from(list(enum))), data.draw(st.sampled_from(list(enum)))
    assert _allowed(check, old, new) == (new in table[old])


@pytest.mark.parametrize(("enum", "table", "check"), MACHINES)
@given(data=st.data())
def test_random_walk_never_leaves_a_terminal_state(
    enum: Any, table: Any, check: Any, data: st.DataObject
) -> None:
    status = next(iter(enum))
    for _ in range(data.draw(st.integers(min_value=0, max_value=30))):
        attempt = data.draw(st.sampled_from(list(enum)))
        if _allowed(check, status, attempt):
            assert table[status], f"left terminal status {status}"
            status = attempt
    assert all(not _allowed(check, status, s) for s in enum) == (not table[status])


@pytest.mark.parametrize(("enum", "table", "check"), MACHINES)
def test_every_status_is_reachable_from_the_first(enum: Any, table: Any, check: Any) -> None:
    seen, frontier = {next(iter(enum))}, [next(iter(enum))]
    while frontier:
        for target in table[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(enum)
