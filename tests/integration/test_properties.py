"""Property tests: random small DAGs on the real engine, a fresh store per example (item 6)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import Harness, OpenHarness

# Step ids drawn in random order, so position in the spec and lexical order disagree.
NAMES = tuple("abcdefghjkmnpqrstuvwxyz")
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class DagCase:
    steps: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    disabled: frozenset[str]
    concurrency: int

    def spec(self, harness: Harness, failing: str | None = None) -> dict[str, Any]:
        steps = []
        for step_id in self.steps:
            step: dict[str, Any] = {
                "id": step_id,
                "plugin": "noop",
                "disabled": step_id in self.disabled,
            }
            if step_id == failing:
                step.update(plugin="fail", disabled=False)
            steps.append(step)
        return harness.spec("random", steps, self.edges)

    def ancestors(self, step_id: str) -> set[str]:
        found: set[str] = set()
        frontier = [step_id]
        while frontier:
            node = frontier.pop()
            for source, target in self.edges:
                if target == node and source not in found:
                    found.add(source)
                    frontier.append(source)
        return found


@st.composite
def dag_cases(draw: st.DrawFn) -> DagCase:
    count = draw(st.integers(min_value=1, max_value=8))
    names = draw(st.permutations(NAMES))[:count]
    forward = [(i, j) for i in range(count) for j in range(i + 1, count)]
    chosen = draw(st.lists(st.sampled_from(forward), unique=True, max_size=12)) if forward else []
    disabled = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    return DagCase(
        steps=tuple(names),
        edges=tuple((names[i], names[j]) for i, j in chosen),
        disabled=frozenset(n for n, off in zip(names, disabled, strict=True) if off),
        concurrency=draw(st.integers(min_value=1, max_value=4)),
    )


def positions(ledger: list[dict[str, Any]], entry_types: set[str]) -> dict[str, int]:
    """seq of the (only) entry of one of `entry_types` for each step."""
    found: dict[str, int] = {}
    for entry in ledger:
        if entry["type"] in entry_types:
            assert entry["stepId"] not in found, f"{entry['stepId']} has two {entry_types}"
            found[entry["stepId"]] = entry["seq"]
    return found


async def check_random_dag_completes(open_harness: OpenHarness, case: DagCase) -> None:
    async with open_harness() as harness:
        view = await harness.run_to_end(case.spec(harness), concurrency=case.concurrency)
        ledger = await harness.ledger(view["runId"])
        report = await harness.runs.verify(harness.tenant, view["runId"])

    assert view["status"] == "completed"
    expected = {s: "skipped" if s in case.disabled else "succeeded" for s in case.steps}
    assert {s["stepId"]: s["status"] for s in view["steps"]} == expected
    started = positions(ledger, {"step.running"})
    ended = positions(ledger, {"step.succeeded", "step.skipped"})
    assert set(started) == set(case.steps) - case.disabled
    for step_id, seq in started.items():
        for ancestor in case.ancestors(step_id):
            assert ended[ancestor] < seq, f"{step_id} started before {ancestor} ended"
    assert report.ok


@PROPERTY_SETTINGS
@given(case=dag_cases())
def test_random_dag_completes_in_a_topological_order(
    open_harness: OpenHarness, case: DagCase
) -> None:
    asyncio.run(check_random_dag_completes(open_harness, case))


async def check_failing_step_stops_its_descendants(
    open_harness: OpenHarness, case: DagCase, failing: str
) -> None:
    async with open_harness() as harness:
        view = await harness.run_to_end(case.spec(harness, failing), concurrency=case.concurrency)
        ledger = await harness.ledger(view["runId"])

    statuses = {s["stepId"]: s["status"] for s in view["steps"]}
    assert view["status"] == "failed"
    assert view["error"]["stepId"] == failing
    assert statuses[failing] == "failed"
    started = positions(ledger, {"step.running"})
    for step_id in case.steps:
        if failing in case.ancestors(step_id):
            assert step_id not in started
            assert statuses[step_id] == "cancelled"
    assert set(statuses.values()) <= {"succeeded", "skipped", "failed", "cancelled"}
    assert ledger[-1]["type"] == "run.failed"


@settings(PROPERTY_SETTINGS, max_examples=15)
@given(case=dag_cases(), pick=st.integers(min_value=0))
def test_failing_step_fails_the_run_and_nothing_after_it_starts(
    open_harness: OpenHarness, case: DagCase, pick: int
) -> None:
    failing = case.steps[pick % len(case.steps)]
    asyncio.run(check_failing_step_stops_its_descendants(open_harness, case, failing))
