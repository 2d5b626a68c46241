"""The run page's DAG graph: layers, stable order, bounded size, escaping, determinism."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from stellaorch.console.graph import (
    MAX_DRAWN_EDGES,
    MAX_DRAWN_NODES,
    layers,
    layout,
    render_svg,
    run_graph,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_a_step_sits_one_column_after_its_longest_path_from_a_root() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("x", "c")]
    assert layers(["a", "b", "c", "x"], edges) == {"a": 0, "b": 1, "c": 2, "x": 0}


def test_order_within_a_column_is_the_given_order() -> None:
    drawn = layout(["z", "m", "a"], [], {})
    assert [(n.step_id, n.column, n.row) for n in drawn.nodes] == [
        ("z", 0, 0),
        ("m", 0, 1),
        ("a", 0, 2),
    ]


def test_edges_to_unknown_steps_are_ignored_and_cycles_get_a_last_column() -> None:
    assert layers(["a", "b", "c"], [("a", "ghost"), ("b", "c"), ("c", "b")]) == {
        "a": 0,
        "b": 1,
        "c": 1,
    }


def test_a_step_the_run_has_not_scheduled_is_pending() -> None:
    drawn = layout(["a", "b"], [("a", "b")], {"a": "running"})
    assert [n.status for n in drawn.nodes] == ["running", "pending"]
    svg = render_svg(drawn)
    assert 'class="dag-node dag-pending"' in svg and "dag-running" in svg


def test_hostile_step_ids_and_statuses_come_out_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    status = '"><img src=x onerror=alert(1)>'
    svg = render_svg(layout([hostile, "b&c"], [(hostile, "b&c")], {hostile: status}))
    assert "<script" not in svg and "<img" not in svg and 'onerror=alert(1)>"' not in svg
    assert "&lt;script&gt;" in svg and "b&amp;c" in svg
    assert "dag-other" in svg  # an unknown status never reaches a class attribute
    ET.fromstring(svg)  # still well-formed


def test_the_graph_is_an_image_with_a_name_and_no_style_or_script() -> None:
    svg = render_svg(layout(["a", "b"], [("a", "b")], {"a": "succeeded", "b": "failed"}))
    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == "DAG graph of 2 steps in 2 layers: 1 failed, 1 succeeded"
    assert root.find(f"{SVG}title") is not None
    assert "style=" not in svg and "<script" not in svg and "href" not in svg
    assert len(root.findall(f"{SVG}path")) == 1 and len(root.findall(f"{SVG}g")) == 2


def test_a_dag_at_the_spec_limit_draws_a_bounded_svg() -> None:
    ids = [f"step-{i:05d}-{'x' * 50}" for i in range(10_000)]
    edges = [(ids[i], ids[j]) for i in range(0, 9_999) for j in (i + 1, min(i + 7, 9_999))]
    drawn = layout(ids, edges, dict.fromkeys(ids, "succeeded"))
    assert len(drawn.nodes) == MAX_DRAWN_NODES and len(drawn.edges) <= MAX_DRAWN_EDGES
    assert drawn.truncated and drawn.total_steps == 10_000
    svg = render_svg(drawn)
    assert len(svg) < 600_000
    assert "(first 500 steps drawn)" in svg
    assert max(len(t) for t in re.findall(r'class="dag-id">([^<]*)<', svg)) <= 22


@given(st.lists(st.from_regex(r"[a-z]{1,3}", fullmatch=True), min_size=1, max_size=12, unique=True))
def test_the_same_dag_always_draws_the_same_svg(ids: list[str]) -> None:
    edges = [(a, b) for a, b in itertools.pairwise(ids) if a < b]
    statuses = dict.fromkeys(ids[::2], "failed")
    first = render_svg(layout(ids, edges, statuses))
    assert first == render_svg(layout(list(ids), list(reversed(edges)), dict(statuses)))
    drawn = layout(ids, edges, statuses)
    for source, target in drawn.edges:  # every edge points to a later column
        column = {n.step_id: n.column for n in drawn.nodes}
        assert column[source] < column[target]


def test_run_graph_takes_steps_from_the_spec_and_statuses_from_the_run() -> None:
    run = {"steps": [{"stepId": "load", "status": "succeeded"}]}
    spec = {
        "steps": [{"id": "load"}, {"id": "report"}],
        "edges": [{"from": "load", "to": "report"}],
    }
    svg = run_graph(run, spec)
    assert "✓ succeeded" in svg and "◷ pending" in svg and svg.count("dag-edge") == 1


def test_a_dense_dag_draws_a_bounded_number_of_edges_and_says_so() -> None:
    ids = [f"s{i:03d}" for i in range(60)]
    edges = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]  # 1,770 edges
    drawn = layout(ids, edges, {})
    assert len(drawn.nodes) == 60 and len(drawn.edges) == MAX_DRAWN_EDGES
    assert f"(first {MAX_DRAWN_EDGES} of 1770 edges drawn)" in render_svg(drawn)
