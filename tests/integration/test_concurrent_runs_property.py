"""Property: many runs of random DAGs with random failures, started at once, all end, and
end as their steps say, with nothing stranded in the store (no lost work under batching)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from stellaorch.store.invariants import find_stranded

if TYPE_CHECKING:
    from conftest import OpenHarness

# More examples for a longer hunt: STELLA_PROPERTY_EXAMPLES=200 pytest this file.
EXAMPLES = int(os.environ.get("STELLA_PROPERTY_EXAMPLES", "8"))
RUNS = 30
WITHIN_S = 30.0  # generous: lost work never ends, a slow CI machine only lags
BACKOFF = {"initialMs": 5, "factor": 2, "jitter": 0}
# What each kind of step does; the failing kinds fail their run whenever they are enabled.
KINDS: dict[str, dict[str, Any]] = {
    "ok": {"plugin": "noop"},
    "fails": {"plugin": "fail", "with": {"retryable": False, "code": "BOOM"}},
    "flaky": {
        "plugin": "fail",
        "with": {"retryable": True, "untilAttempt": 2, "code": "FLAKY"},
        "retry": {"maxAttempts": 3, "backoff": BACKOFF},
    },
    "exhausts": {
        "plugin": "fail",
        "with": {"retryable": True, "code": "FLAKY"},
        "retry": {"maxAttempts": 2, "backoff": BACKOFF},
    },
}
FAILING = frozenset({"fails", "exhausts"})
SHAPES = ("chain", "fan_out", "diamond", "random")


@dataclass(frozen=True)
class DagCase:
    """A DAG: steps s0..sN-1 with a kind each, forward edges, some steps disabled."""

    dag_id: str
    kinds: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    disabled: frozenset[int]

    def spec(self) -> dict[str, Any]:
        steps = [
            {"id": f"s{i}", **KINDS[kind], "disabled": i in self.disabled}
            for i, kind in enumerate(self.kinds)
        ]
        return {
            "dagId": self.dag_id,
            "version": 1,
            "steps": steps,
            "edges": [{"from": f"s{a}", "to": f"s{b}"} for a, b in self.edges],
        }

    def expected_status(self) -> str:
        enabled = (k for i, k in enumerate(self.kinds) if i not in self.disabled)
        return "failed" if any(k in FAILING for k in enabled) else "completed"


def shape_edges(shape: str, count: int, chosen: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Edges of a shape over `count` steps (`chosen`: the random shape's forward pairs)."""
    if shape == "chain":
        return [(i, i + 1) for i in range(count - 1)]
    if shape == "fan_out":  # s0 to every other step
        return [(0, i) for i in range(1, count)]
    if shape == "diamond":  # s0 fans out to the middle steps, which all join into the last
        middle = range(1, count - 1)
        return [(0, i) for i in middle] + [(i, count - 1) for i in middle] or (
            [(0, 1)] if count == 2 else []
        )
    return chosen


@st.composite
def dag_cases(draw: st.DrawFn, dag_id: str) -> DagCase:
    count = draw(st.integers(min_value=1, max_value=8))
    forward = [(i, j) for i in range(count) for j in range(i + 1, count)]
    chosen = draw(st.lists(st.sampled_from(forward), unique=True, max_size=10)) if forward else []
    kinds = draw(
        st.lists(st.sampled_from(sorted(KINDS)) | st.just("ok"), min_size=count, max_size=count)
    )
    disabled = draw(st.sets(st.integers(min_value=0, max_value=count - 1), max_size=2))
    return DagCase(
        dag_id=dag_id,
        kinds=tuple(kinds),
        edges=tuple(shape_edges(draw(st.sampled_from(SHAPES)), count, chosen)),
        disabled=frozenset(disabled),
    )


@dataclass(frozen=True)
class Scenario:
    """Some DAGs, which DAG each of the runs starts, and the workers that serve them."""

    dags: tuple[DagCase, ...]
    starts: tuple[int, ...]
    concurrency: tuple[int, ...]
    back_to_back: bool  # each create awaited before the next, else all at once


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.sampled_from([1, 1, 1, 2, 3, 5]))  # one DAG often: runs then share steps
    dags = tuple(draw(dag_cases(f"dag{i}")) for i in range(count))
    starts = draw(
        st.lists(st.integers(min_value=0, max_value=count - 1), min_size=RUNS, max_size=RUNS)
    )
    # Wide workers (64 is the default) finish many runs' steps in one completion batch,
    # where lost work hid before.
    sizes = st.sampled_from([1, 3, 8, 64]) | st.integers(min_value=1, max_value=64)
    workers = draw(st.lists(sizes, min_size=1, max_size=2))
    return Scenario(dags, tuple(starts), tuple(workers), draw(st.booleans()))


async def check_every_run_ends(open_harness: OpenHarness, scenario: Scenario) -> None:
    async with open_harness() as harness:
        for dag in scenario.dags:
            await harness.publish(dag.spec())
        for concurrency in scenario.concurrency:
            harness.start_worker(concurrency)
        if scenario.back_to_back:
            created = [await harness.create(scenario.dags[i].dag_id) for i in scenario.starts]
        else:
            created = await asyncio.gather(
                *(harness.create(scenario.dags[i].dag_id) for i in scenario.starts)
            )
        views = await asyncio.gather(
            *(harness.wait_done(c.run.run_id, within=WITHIN_S) for c in created)
        )
        await harness.stop_workers()
        stranded = await harness.orchestrator.env.db.read(find_stranded)

    expected = [scenario.dags[i].expected_status() for i in scenario.starts]
    assert [v["status"] for v in views] == expected
    assert stranded == []


@settings(
    max_examples=EXAMPLES,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking 30 runs takes minutes
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
@example(  # the reported loss: back-to-back runs whose second step fails (SQLite rowid reuse)
    Scenario(
        dags=(DagCase("dag0", ("ok", "fails"), ((0, 1),), frozenset()),),
        starts=(0,) * RUNS,
        concurrency=(64,),
        back_to_back=True,
    )
)
def test_concurrent_runs_of_random_dags_all_end_as_their_steps_say(
    open_harness: OpenHarness, scenario: Scenario
) -> None:
    asyncio.run(check_every_run_ends(open_harness, scenario))
