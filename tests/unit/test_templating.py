"""Finding and substituting `${...}` references in step parameters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.templating import (
    Reference,
    ReferenceSyntaxError,
    ReferenceUnresolved,
    find_references,
    locate_references,
    substitute,
)

INPUTS = {"day": "2024-01-01", "limit": 5, "tags": ["a", "b"], "cfg": {"deep": {"on": True}}}
OUTPUTS = {"extract": {"rows": [{"id": 1}, {"id": 2}], "count": 2, "path": "/tmp/x"}}


def _sub(params: Any, secrets: dict[str, str] | None = None) -> Any:
    return substitute(params, inputs=INPUTS, outputs=OUTPUTS, secrets=secrets)


# --- finding ---------------------------------------------------------------------------------


def test_input_reference_is_parsed_into_path() -> None:
    assert find_references("${inputs.cfg.deep.on}") == [
        Reference(
            kind="inputs", step_id=None, path=("cfg", "deep", "on"), text="${inputs.cfg.deep.on}"
        )
    ]


def test_step_reference_splits_step_id_from_output_path() -> None:
    (ref,) = find_references("${steps.extract.outputs.rows.0.id}")
    assert (ref.kind, ref.step_id, ref.path) == ("steps", "extract", ("rows", "0", "id"))


def test_step_id_with_dots_is_kept_whole() -> None:
    (ref,) = find_references("${steps.load.v2.outputs.n}")
    assert (ref.step_id, ref.path) == ("load.v2", ("n",))


def test_secret_reference_names_the_secret() -> None:
    (ref,) = find_references("Bearer ${secrets.api-token}")
    assert (ref.kind, ref.path) == ("secrets", ("api-token",))


def test_references_are_found_in_sorted_key_then_list_order() -> None:
    params = {"b": ["${inputs.x}", "${inputs.y}"], "a": "${inputs.z} ${inputs.w}"}
    assert [r.path[0] for r in find_references(params)] == ["z", "w", "x", "y"]


def test_dict_keys_are_not_references() -> None:
    assert find_references({"${inputs.x}": 1}) == []


def test_locations_point_into_the_parameter_tree() -> None:
    located = locate_references({"h": {"auth": "${secrets.k}"}, "l": [1, "${inputs.a}"]})
    assert [where for where, _ in located] == ["h.auth", "l[1]"]


def test_escaped_opener_is_not_a_reference() -> None:
    assert find_references("cost: $${inputs.x}") == []


def test_lone_dollar_and_brace_are_literal() -> None:
    assert find_references("$5 {x} $") == []


@pytest.mark.parametrize(
    "text",
    [
        "${input.x}",
        "${inputs}",
        "${inputs.}",
        "${inputs.a..b}",
        "${steps.a.y}",
        "${steps.a.outputs}",
        "${steps.outputs.x}",
        "${secrets}",
        "${}",
        "${inputs.a b}",
    ],
)
def test_malformed_reference_is_a_syntax_error(text: str) -> None:
    with pytest.raises(ReferenceSyntaxError):
        find_references({"p": text})


def test_unterminated_reference_is_a_syntax_error() -> None:
    with pytest.raises(ReferenceSyntaxError, match="unterminated"):
        find_references("${inputs.x")


def test_syntax_error_carries_its_location_and_code() -> None:
    with pytest.raises(ReferenceSyntaxError) as caught:
        find_references({"a": [{"b": "${bogus.x}"}]})
    assert (caught.value.details["path"], caught.value.code) == ("a[0].b", "REFERENCE_INVALID")


# --- substituting ----------------------------------------------------------------------------


def test_lone_reference_keeps_its_json_type() -> None:
    assert _sub({"n": "${inputs.limit}", "rows": "${steps.extract.outputs.rows}"}) == {
        "n": 5,
        "rows": [{"id": 1}, {"id": 2}],
    }


def test_list_index_is_written_in_digits() -> None:
    assert _sub("${steps.extract.outputs.rows.1.id}") == 2


def test_embedded_string_is_rendered_as_is() -> None:
    assert _sub("day=${inputs.day}!") == "day=2024-01-01!"


def test_embedded_non_string_is_rendered_as_canonical_json() -> None:
    assert _sub("cfg=${inputs.cfg} n=${inputs.limit}") == 'cfg={"deep":{"on":true}} n=5'


def test_escaped_opener_becomes_literal() -> None:
    assert _sub("$${inputs.day} vs ${inputs.day}") == "${inputs.day} vs 2024-01-01"


def test_secret_is_substituted() -> None:
    assert _sub({"h": "Bearer ${secrets.tok}"}, secrets={"tok": "s3cr3t"}) == {"h": "Bearer s3cr3t"}


def test_dict_keys_are_left_alone() -> None:
    assert _sub({"${inputs.day}": "${inputs.limit}"}) == {"${inputs.day}": 5}


def test_non_string_scalars_pass_through() -> None:
    assert _sub([1, 2.5, None, True]) == [1, 2.5, None, True]


def test_result_is_a_new_structure() -> None:
    result = _sub({"rows": "${steps.extract.outputs.rows}"})
    result["rows"].append("mutated")
    assert OUTPUTS["extract"]["rows"] == [{"id": 1}, {"id": 2}]


def test_input_params_are_not_mutated() -> None:
    params = {"a": ["${inputs.limit}"]}
    _sub(params)
    assert params == {"a": ["${inputs.limit}"]}


@pytest.mark.parametrize(
    "text",
    [
        "${inputs.missing}",
        "${inputs.cfg.deep.off}",
        "${inputs.tags.2}",
        "${inputs.day.0}",
        "${steps.other.outputs.x}",
        "${steps.extract.outputs.nope}",
    ],
)
def test_missing_target_is_unresolved_naming_the_reference(text: str) -> None:
    with pytest.raises(ReferenceUnresolved, match=r"\$\{"):
        _sub({"p": text})
    with pytest.raises(ReferenceUnresolved) as caught:
        _sub(text)
    assert caught.value.details["reference"] == text and text in caught.value.message


def test_missing_secret_is_unresolved_without_secrets() -> None:
    with pytest.raises(ReferenceUnresolved) as caught:
        _sub("${secrets.tok}")
    assert caught.value.code == "REFERENCE_UNRESOLVED"


def test_unresolved_error_does_not_leak_secret_values() -> None:
    with pytest.raises(ReferenceUnresolved) as caught:
        _sub("${secrets.other} ${secrets.tok}", secrets={"tok": "s3cr3t"})
    assert "s3cr3t" not in str(caught.value)


plain_text = st.text(alphabet=st.characters(blacklist_characters="$"))


@given(
    st.recursive(plain_text | st.integers(), lambda c: st.lists(c) | st.dictionaries(plain_text, c))
)
def test_values_without_references_substitute_to_themselves(params: Any) -> None:
    assert _sub(params) == params


@given(plain_text, plain_text)
def test_escape_round_trip_yields_literal_opener(before: str, after: str) -> None:
    assert _sub(f"{before}$${{{after}") == f"{before}${{{after}"
