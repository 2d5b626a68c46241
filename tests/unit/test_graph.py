"""Deterministic topological order and cycle detection (properties over random DAGs)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.errors import SpecInvalid
from stellaorch.domain.graph import find_cycles, strongly_connected
from stellaorch.domain.spec import topological_order

Edges = list[tuple[str, str]]
step_ids = st.lists(st.from_regex(r"[a-z0-9]{1,3}", fullmatch=True), min_size=1, unique=True)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], Edges]:
    """Random ids and an acyclic edge set: only edges forward in a random permutation."""
    ids = draw(step_ids)
    ranked = draw(st.permutations(ids))
    pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    return ids, edges


def _smallest_order(ids: list[str], edges: Edges) -> list[str]:
    """Reference: repeatedly take the smallest id whose predecessors are all placed (no heap)."""
    placed: list[str] = []
    remaining = set(ids)
    while remaining:
        ready = [n for n in remaining if all(a in placed for a, b in edges if b == n)]
        placed.append(min(ready))
        remaining.remove(min(ready))
    return placed


@given(dags())
def test_order_respects_every_edge(dag: tuple[list[str], Edges]) -> None:
    ids, edges = dag
    position = {step: i for i, step in enumerate(topological_order(ids, edges))}
    assert all(position[a] < position[b] for a, b in edges)


@given(dags())
def test_order_is_a_permutation_of_the_ids(dag: tuple[list[str], Edges]) -> None:
    ids, edges = dag
    assert sorted(topological_order(ids, edges)) == sorted(ids)


@given(dags())
def test_order_is_the_lexically_smallest_valid_order(dag: tuple[list[str], Edges]) -> None:
    ids, edges = dag
    assert topological_order(ids, edges) == _smallest_order(ids, edges)


@given(dags(), st.randoms(use_true_random=False))
def test_order_ignores_input_order(dag: tuple[list[str], Edges], rng: random.Random) -> None:
    ids, edges = dag
    shuffled_ids, shuffled_edges = ids[:], edges[:]
    rng.shuffle(shuffled_ids)
    rng.shuffle(shuffled_edges)
    assert topological_order(shuffled_ids, shuffled_edges) == topological_order(ids, edges)


@given(dags())
def test_acyclic_graph_has_no_cycles(dag: tuple[list[str], Edges]) -> None:
    ids, edges = dag
    successors = {n: sorted(b for a, b in edges if a == n) for n in ids}
    assert find_cycles(successors) == []


@given(dags(), st.data())
def test_back_edge_creates_a_reported_cycle(
    dag: tuple[list[str], Edges], data: st.DataObject
) -> None:
    ids, edges = dag
    if not edges:
        return
    source, target = data.draw(st.sampled_from(edges))
    with pytest.raises(SpecInvalid, match="cycle: "):
        topological_order(ids, [*edges, (target, source)])


def test_independent_steps_come_in_lexical_order() -> None:
    assert topological_order(["c", "a", "b"], []) == ["a", "b", "c"]


def test_ready_smaller_id_jumps_ahead_of_older_ready_step() -> None:
    assert topological_order(["z", "b", "a"], [("a", "z")]) == ["a", "b", "z"]


def test_duplicate_edges_do_not_block_the_target() -> None:
    assert topological_order(["a", "b"], [("a", "b"), ("a", "b")]) == ["a", "b"]


def test_cycle_error_names_the_cycle_from_its_smallest_step() -> None:
    with pytest.raises(SpecInvalid, match=r"^cycle: b -> c -> d -> b$"):
        topological_order(["a", "b", "c", "d"], [("a", "b"), ("d", "b"), ("b", "c"), ("c", "d")])


def test_reported_cycle_is_the_shortest_through_its_start() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")]
    with pytest.raises(SpecInvalid, match=r"^cycle: a -> c -> a$"):
        topological_order(["a", "b", "c"], edges)


def test_self_edge_is_a_cycle() -> None:
    with pytest.raises(SpecInvalid, match=r"^cycle: a -> a$"):
        topological_order(["a"], [("a", "a")])


def test_edge_to_unknown_step_is_spec_invalid() -> None:
    with pytest.raises(SpecInvalid, match="unknown step 'x'"):
        topological_order(["a"], [("a", "x")])


def test_long_chain_does_not_hit_the_recursion_limit() -> None:
    ids = [f"s{i:05d}" for i in range(20_000)]
    chain = {a: [b] for a, b in itertools.pairwise(ids)} | {ids[-1]: [ids[0]]}
    assert [len(c) for c in strongly_connected(chain)] == [20_000]
