"""The "unchanged" rule of resumed replays: which succeeded steps a new version keeps."""

from __future__ import annotations

from typing import Any

from stellaorch.domain.resume import kept_steps
from stellaorch.domain.spec import CompiledDag, compile_dag, parse_spec


def dag(steps: list[dict[str, Any]], edges: list[tuple[str, str]], version: int) -> CompiledDag:
    document = {
        "dagId": "etl",
        "version": version,
        "steps": steps,
        "edges": [{"from": a, "to": b} for a, b in edges],
    }
    return compile_dag(parse_spec(document))


def noop(step_id: str, value: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "plugin": "noop", "with": {"outputs": {"v": value}}, **extra}


CHAIN = [("a", "b"), ("b", "c")]


def test_unchanged_succeeded_steps_are_kept_up_to_the_failed_one() -> None:
    before = dag([noop("a"), noop("b"), noop("c")], CHAIN, 1)
    after = dag([noop("a"), noop("b"), noop("c")], CHAIN, 2)
    assert kept_steps(before, after, {"a", "b"}) == ["a", "b"]


def test_a_step_with_other_params_runs_again_and_so_does_everything_after_it() -> None:
    before = dag([noop("a"), noop("b"), noop("c")], CHAIN, 1)
    after = dag([noop("a", 2), noop("b"), noop("c")], CHAIN, 2)
    assert kept_steps(before, after, {"a", "b", "c"}) == []


def test_a_step_with_another_plugin_version_runs_again() -> None:
    before = dag([{"id": "a", "plugin": "fail@1", "with": {"untilAttempt": 1}}], [], 1)
    after = dag([{"id": "a", "plugin": "fail", "with": {"untilAttempt": 1}}], [], 2)
    assert kept_steps(before, after, {"a"}) == []


def test_a_step_with_other_predecessors_runs_again() -> None:
    before = dag([noop("a"), noop("x"), noop("b")], [("a", "b")], 1)
    after = dag([noop("a"), noop("x"), noop("b")], [("a", "b"), ("x", "b")], 2)
    assert kept_steps(before, after, {"a", "x", "b"}) == ["a", "x"]


def test_new_and_disabled_steps_are_never_kept() -> None:
    before = dag([noop("a")], [], 1)
    after = dag([noop("a", disabled=True), noop("n")], [], 2)
    assert kept_steps(before, after, {"a", "n"}) == []
