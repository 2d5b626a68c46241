"""DAG spec parsing, validation, hashing and compilation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.errors import SpecInvalid
from stellaorch.domain.spec import (
    Backoff,
    DagSpec,
    StepSpec,
    compile_dag,
    load_spec_file,
    parse_spec,
    spec_hash,
)

YAML_SPEC = """
dagId: nightly.report
version: 2
steps:
  - id: extract
    plugin: http@1.0.0
    with: {url: "https://example.test/${inputs.day}"}
    network: ["example.test:443"]
  - id: load
    plugin: noop
    with: {rows: "${steps.extract.outputs.rows}"}
    retry: {maxAttempts: 3, backoff: {initialMs: 500, factor: 3, maxMs: 9000, jitter: 0}}
    timeoutSeconds: 30
    resources: {cpuSeconds: 10, memoryMb: 256}
edges:
  - {from: extract, to: load}
metadata: {owner: data-team}
"""


def _doc(steps: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """A minimal valid document, with overrides."""
    doc: dict[str, Any] = {
        "dagId": "demo",
        "version": 1,
        "steps": steps if steps is not None else [{"id": "a", "plugin": "noop"}],
    }
    doc.update(fields)
    return doc


def _step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "plugin": "noop", **fields}


def _edge(source: str, target: str) -> dict[str, str]:
    return {"from": source, "to": target}


def _errors(source: Any, **kwargs: Any) -> list[dict[str, str]]:
    """The problems parse_spec reports for `source` (fails the test if it parses)."""
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(source, **kwargs)
    errors: list[dict[str, str]] = caught.value.details["errors"]
    return errors


def _paths(source: Any) -> list[str]:
    return [error["path"] for error in _errors(source)]


# --- parsing -------------------------------------------------------------------------------


def test_yaml_spec_parses_into_typed_model() -> None:
    spec = parse_spec(YAML_SPEC)
    load = spec.steps[1]
    assert (load.retry.max_attempts, load.retry.backoff.factor, load.timeout_seconds) == (3, 3, 30)


def test_json_text_parses_like_the_same_mapping() -> None:
    assert parse_spec(json.dumps(_doc()), fmt="json") == parse_spec(_doc())


def test_bytes_are_decoded_as_utf8() -> None:
    assert parse_spec(YAML_SPEC.encode()).dag_id == "nightly.report"


def test_auto_format_falls_back_to_yaml_for_flow_mappings() -> None:
    spec = parse_spec("{dagId: demo, version: 1, steps: [{id: a, plugin: noop}]}")
    assert spec.steps[0].id == "a"


def test_defaults_match_the_specification() -> None:
    step = parse_spec(_doc()).steps[0]
    backoff = step.retry.backoff
    assert (backoff.initial_ms, backoff.factor, backoff.max_ms, backoff.jitter) == (
        1000,
        2.0,
        60000,
        0.2,
    )
    assert (step.retry.max_attempts, step.timeout_seconds, step.network) == (1, 300, [])


def test_integer_version_is_stored_as_its_decimal_string() -> None:
    assert parse_spec(_doc(version=7)).version == "7"


@pytest.mark.parametrize("version", ["1.2.3", "2.0", "10", "1.0.0-rc.1", "1.0.0+build.5"])
def test_semver_like_versions_are_accepted(version: str) -> None:
    assert parse_spec(_doc(version=version)).version == version


@pytest.mark.parametrize("version", [0, -1, "0", "1.2.3.4", "v1", "", True, 1.5, "1\n"])
def test_bad_versions_are_rejected(version: Any) -> None:
    assert _paths(_doc(version=version)) == ["version"]


def test_plugin_name_and_version_are_split() -> None:
    step = StepSpec(id="a", plugin="http@1.2.0")
    assert (step.plugin_name, step.plugin_version) == ("http", "1.2.0")


def test_plugin_without_version_has_none() -> None:
    assert StepSpec(id="a", plugin="noop").plugin_version is None


@pytest.mark.parametrize("plugin", ["Http", "1http", "http@", "http@1@2", "http@ 1", ""])
def test_malformed_plugin_is_rejected(plugin: str) -> None:
    assert _paths(_doc([_step("a", plugin=plugin)])) == ["steps[0].plugin"]


@pytest.mark.parametrize("step_id", ["A", "-a", "a b", "a" * 65, "a\n"])
def test_malformed_step_id_is_rejected(step_id: str) -> None:
    assert _paths(_doc([_step(step_id)])) == ["steps[0].id"]


def test_model_accepts_python_field_names_too() -> None:
    backoff = Backoff(initial_ms=10, max_ms=20)
    assert backoff.model_dump(by_alias=True)["initialMs"] == 10


def test_unknown_field_is_rejected_with_its_path() -> None:
    assert _paths(_doc([_step("a", retires=3)])) == ["steps[0].retires"]


def test_string_number_is_not_coerced() -> None:
    assert _paths(_doc([_step("a", timeoutSeconds="30")])) == ["steps[0].timeoutSeconds"]


def test_max_ms_below_initial_ms_is_rejected() -> None:
    step = _step("a", retry={"backoff": {"initialMs": 5000, "maxMs": 100}})
    assert _paths(_doc([step])) == ["steps[0].retry.backoff"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeoutSeconds", 0),
        ("timeoutSeconds", 86_401),
        ("concurrency", 0),
        ("retry", {"maxAttempts": 0}),
        ("retry", {"maxAttempts": 101}),
        ("retry", {"backoff": {"factor": 0.5}}),
        ("retry", {"backoff": {"jitter": 1.5}}),
        ("retry", {"backoff": {"initialMs": -1}}),
    ],
)
def test_out_of_range_numbers_are_rejected(field: str, value: Any) -> None:
    assert _paths(_doc([_step("a", **{field: value})]))[0].startswith(f"steps[0].{field}")


def test_unknown_resource_is_rejected() -> None:
    assert _paths(_doc([_step("a", resources={"gpus": 1})])) == ["steps[0].resources"]


def test_non_positive_resource_is_rejected() -> None:
    assert _paths(_doc([_step("a", resources={"memoryMb": 0})])) == ["steps[0].resources"]


def test_network_entry_must_be_host_and_port_not_url() -> None:
    assert _paths(_doc([_step("a", network=["https://x.test"])])) == ["steps[0].network"]


def test_yaml_date_in_params_is_rejected() -> None:
    text = "dagId: d\nversion: 1\nsteps: [{id: a, plugin: noop, with: {day: 2024-01-01}}]"
    assert _paths(text) == ["steps[0].with"]


def test_nan_in_metadata_is_rejected() -> None:
    assert _paths(_doc(metadata={"x": float("nan")})) == ["metadata"]


def test_empty_steps_are_rejected() -> None:
    assert _paths(_doc([])) == ["steps"]


def test_more_than_ten_thousand_steps_are_rejected() -> None:
    steps = [_step(f"s{i}") for i in range(10_001)]
    assert "steps" in _paths(_doc(steps))


def test_ten_thousand_step_chain_is_accepted() -> None:
    steps = [_step(f"s{i:05d}") for i in range(10_000)]
    edges = [_edge(f"s{i:05d}", f"s{i + 1:05d}") for i in range(9_999)]
    assert len(compile_dag(parse_spec(_doc(steps, edges=edges))).order) == 10_000


@pytest.mark.parametrize("source", ["- a\n- b", "just text", "", b"\xff\xfe\x00"])
def test_non_mapping_or_undecodable_document_is_spec_invalid(source: Any) -> None:
    assert _paths(source) == ["$"]


def test_unparsable_yaml_is_spec_invalid_with_line_number() -> None:
    errors = _errors("dagId: [unclosed\n")
    assert errors[0]["path"] == "$" and "line" in errors[0]["message"]


def test_unparsable_json_is_spec_invalid() -> None:
    errors = _errors('{"dagId": "demo",}', fmt="json")
    assert errors[0]["path"] == "$" and errors[0]["message"].startswith("not valid JSON")


def test_message_names_first_problem_and_count() -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(_doc([_step("A"), _step("b", plugin="X"), _step("c", plugin="Y")]))
    first = caught.value.details["errors"][0]["message"]
    assert caught.value.message == f"invalid DAG spec: steps[0].id: {first} (and 2 more problems)"


def test_single_problem_message_has_no_count() -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(_doc(version=0))
    assert "more problem" not in caught.value.message


def test_field_and_graph_problems_are_reported_together() -> None:
    doc = _doc([_step("a", timeoutSeconds=-1), _step("a")])
    assert _paths(doc) == ["steps[0].timeoutSeconds", "steps[1].id"]


# --- graph rules -----------------------------------------------------------------------------


def test_duplicate_step_id_is_reported_at_second_occurrence() -> None:
    assert _paths(_doc([_step("a"), _step("b"), _step("a")])) == ["steps[2].id"]


def test_edge_to_unknown_step_names_the_end() -> None:
    assert _paths(_doc(edges=[_edge("a", "ghost")])) == ["edges[0].to"]


def test_edge_from_unknown_step_names_the_end() -> None:
    assert _paths(_doc(edges=[_edge("ghost", "a")])) == ["edges[0].from"]


def test_self_edge_is_rejected() -> None:
    errors = _errors(_doc(edges=[_edge("a", "a")]))
    assert [(e["path"], e["message"]) for e in errors] == [("edges[0]", "self-edge on step 'a'")]


def test_duplicate_edge_is_rejected_at_second_occurrence() -> None:
    doc = _doc([_step("a"), _step("b")], edges=[_edge("a", "b"), _edge("a", "b")])
    assert _paths(doc) == ["edges[1]"]


def test_cycle_error_names_the_cycle_path() -> None:
    steps = [_step(name) for name in ("c", "a", "b", "d")]
    edges = [_edge("a", "b"), _edge("b", "c"), _edge("c", "a"), _edge("c", "d")]
    messages = [e["message"] for e in _errors(_doc(steps, edges=edges))]
    assert messages == ["cycle: a -> b -> c -> a"]


def test_cycle_path_starts_at_smallest_id_whatever_the_edge_order() -> None:
    steps = [_step(name) for name in ("x", "m", "b")]
    edges = [_edge("x", "b"), _edge("m", "x"), _edge("b", "m")]
    assert _errors(_doc(steps, edges=edges))[0]["message"] == "cycle: b -> m -> x -> b"


def test_each_separate_cycle_is_reported() -> None:
    steps = [_step(name) for name in ("a", "b", "c", "d")]
    edges = [_edge("a", "b"), _edge("b", "a"), _edge("c", "d"), _edge("d", "c")]
    messages = [e["message"] for e in _errors(_doc(steps, edges=edges))]
    assert messages == ["cycle: a -> b -> a", "cycle: c -> d -> c"]


def test_reference_to_unknown_step_is_rejected() -> None:
    step = _step("a", **{"with": {"x": "${steps.ghost.outputs.y}"}})
    errors = _errors(_doc([step]))
    assert errors[0]["path"] == "steps[0].with.x" and "unknown step 'ghost'" in errors[0]["message"]


def test_reference_to_own_outputs_is_rejected() -> None:
    step = _step("a", **{"with": {"x": "${steps.a.outputs.y}"}})
    errors = _errors(_doc([step]))
    assert [e["message"] for e in errors] == [
        "${steps.a.outputs.y}: a step cannot reference its own outputs"
    ]


def test_reference_to_step_that_is_not_upstream_is_rejected() -> None:
    steps = [_step("a"), _step("b", **{"with": {"x": ["${steps.a.outputs.y}"]}})]
    errors = _errors(_doc(steps))
    assert errors[0]["path"] == "steps[1].with.x[0]" and "not upstream" in errors[0]["message"]


def test_reference_to_downstream_step_is_rejected() -> None:
    steps = [_step("a", **{"with": {"x": "${steps.b.outputs.y}"}}), _step("b")]
    assert _paths(_doc(steps, edges=[_edge("a", "b")])) == ["steps[0].with.x"]


def test_reference_to_transitive_ancestor_is_accepted() -> None:
    steps = [_step("a"), _step("b"), _step("c", **{"with": {"x": "${steps.a.outputs.y}"}})]
    spec = parse_spec(_doc(steps, edges=[_edge("a", "b"), _edge("b", "c")]))
    assert spec.steps[2].params == {"x": "${steps.a.outputs.y}"}


def test_malformed_reference_is_reported_at_its_location() -> None:
    step = _step("a", **{"with": {"h": {"k": "${nope.x}"}}})
    errors = _errors(_doc([step]))
    assert (
        errors[0]["path"] == "steps[0].with.h.k"
        and "unknown reference kind" in errors[0]["message"]
    )


def test_graph_rules_run_even_when_fields_are_invalid() -> None:
    doc = _doc([_step("a", plugin="BAD")], edges=[_edge("a", "zz")])
    assert _paths(doc) == ["steps[0].plugin", "edges[0].to"]


ids = st.sampled_from(["a", "b", "c", "A", ""]) | st.integers()
fragments = st.sampled_from(
    ["${inputs.x}", "${steps.a.outputs.y}", "${steps.c.outputs}", "${bad", "$${", "${x.y}", "k"]
)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
near_steps = st.lists(
    st.fixed_dictionaries(
        {"id": ids, "plugin": st.sampled_from(["noop", "X", 3])},
        optional={"with": st.dictionaries(st.text(max_size=2), st.lists(fragments).map("".join))},
    )
    | anything,
    max_size=4,
)
near_edges = st.lists(
    st.fixed_dictionaries({"from": ids, "to": ids}) | anything,
    max_size=5,
)


@given(
    st.fixed_dictionaries(
        {"dagId": st.sampled_from(["d", "D"]), "version": anything | st.just(1)},
        optional={"steps": near_steps | anything, "edges": near_edges, "metadata": anything},
    )
)
def test_any_document_is_parsed_or_rejected_as_spec_invalid(document: dict[str, Any]) -> None:
    try:
        spec = parse_spec(document)
    except SpecInvalid as error:
        assert error.details["errors"] and all(e["path"] for e in error.details["errors"])
    else:
        assert compile_dag(spec).order


@given(st.text(max_size=60) | st.binary(max_size=60))
def test_any_text_is_parsed_or_rejected_as_spec_invalid(text: str | bytes) -> None:
    try:
        parse_spec(text)
    except SpecInvalid as error:
        assert error.details["errors"]


# --- documents, hashing, files ---------------------------------------------------------------


def test_document_uses_camel_case_and_json_aliases() -> None:
    document = parse_spec(YAML_SPEC).to_document()
    step = document["steps"][1]
    assert {"dagId", "edges"} <= document.keys() and {"with", "timeoutSeconds"} <= step.keys()
    assert document["edges"] == [{"from": "extract", "to": "load"}]


def test_document_round_trips_through_parse_spec() -> None:
    spec = parse_spec(YAML_SPEC)
    assert parse_spec(spec.to_document()) == spec


def test_hash_ignores_spelled_out_defaults() -> None:
    explicit = _doc([_step("a", retry={"maxAttempts": 1}, timeoutSeconds=300.0, disabled=False)])
    assert spec_hash(parse_spec(explicit)) == spec_hash(parse_spec(_doc()))


def test_hash_treats_integer_and_string_version_alike() -> None:
    assert spec_hash(parse_spec(_doc(version=3))) == spec_hash(parse_spec(_doc(version="3")))


def test_hash_changes_when_a_parameter_changes() -> None:
    changed = _doc([_step("a", **{"with": {"n": 2}})])
    assert spec_hash(parse_spec(changed)) != spec_hash(parse_spec(_doc()))


def test_hash_is_sha256_of_canonical_document() -> None:
    assert spec_hash(parse_spec(YAML_SPEC)).startswith("sha256:")
    assert len(spec_hash(parse_spec(YAML_SPEC))) == len("sha256:") + 64


def test_load_spec_file_reads_yaml_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "dag.yml"
    path.write_text(YAML_SPEC)
    assert load_spec_file(path).dag_id == "nightly.report"


def test_load_spec_file_reads_json_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(_doc()))
    assert load_spec_file(path) == parse_spec(_doc())


def test_load_spec_file_json_suffix_rejects_yaml(tmp_path: Path) -> None:
    path = tmp_path / "dag.json"
    path.write_text(YAML_SPEC)
    with pytest.raises(SpecInvalid):
        load_spec_file(path)


def test_missing_file_is_spec_invalid(tmp_path: Path) -> None:
    with pytest.raises(SpecInvalid, match="cannot read"):
        load_spec_file(tmp_path / "absent.yaml")


# --- compilation -----------------------------------------------------------------------------


def _diamond() -> DagSpec:
    steps = [
        _step(
            "join", **{"with": {"l": "${steps.left.outputs.v}", "r": "${steps.right.outputs.v}"}}
        ),
        _step("right"),
        _step("left"),
        _step("start"),
    ]
    edges = [_edge("start", "right"), _edge("start", "left"), _edge("left", "join")]
    return parse_spec(_doc(steps, edges=[*edges, _edge("right", "join")]))


def test_compiled_order_is_topological_with_lexical_tie_break() -> None:
    assert compile_dag(_diamond()).order == ("start", "left", "right", "join")


def test_compiled_neighbours_are_sorted() -> None:
    dag = compile_dag(_diamond())
    assert (dag.successors["start"], dag.predecessors["join"]) == (
        ("left", "right"),
        ("left", "right"),
    )


def test_compiled_roots_and_positions() -> None:
    dag = compile_dag(_diamond())
    assert dag.roots == ("start",) and dag.position["join"] == 3


def test_compiled_output_refs_list_referenced_steps() -> None:
    dag = compile_dag(_diamond())
    assert (dag.output_refs["join"], dag.output_refs["start"]) == (("left", "right"), ())


def test_compiled_dag_carries_spec_hash() -> None:
    spec = _diamond()
    assert compile_dag(spec).spec_hash == spec_hash(spec)


def test_compile_rejects_cyclic_model_built_without_parse_spec() -> None:
    spec = DagSpec.model_validate(
        _doc([_step("a"), _step("b")], edges=[_edge("a", "b"), _edge("b", "a")])
    )
    with pytest.raises(SpecInvalid, match="a -> b -> a"):
        compile_dag(spec)
