"""Canonical JSON and hashing: the form every stored hash is taken over."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.canonical import canonical_json, hash_json, sha256_hex

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def _shuffled_keys(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every mapping's insertion order shuffled."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: _shuffled_keys(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [_shuffled_keys(item, rng) for item in value]
    return value


@given(json_values, st.randoms(use_true_random=False))
def test_hash_is_invariant_under_key_order(value: Any, rng: random.Random) -> None:
    assert hash_json(_shuffled_keys(value, rng)) == hash_json(value)


@given(st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1))
def test_integral_float_hashes_like_the_integer(number: int) -> None:
    assert hash_json({"n": float(number)}) == hash_json({"n": number})


def test_one_point_zero_is_written_as_one() -> None:
    assert canonical_json([1.0, 2.5]) == "[1,2.5]"


def test_keys_are_sorted_without_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_non_ascii_is_written_as_utf8_not_escaped() -> None:
    assert canonical_json("é") == '"é"'


def test_nan_is_rejected() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_hash_json_is_prefixed_sha256_of_canonical_form() -> None:
    expected = "sha256:" + sha256_hex(b'{"a":1}')
    assert hash_json({"a": 1.0}) == expected


@given(json_values)
def test_canonical_json_round_trips_to_an_equal_value(value: Any) -> None:
    assert json.loads(canonical_json(value)) == value


def test_infinity_is_rejected() -> None:
    with pytest.raises(ValueError):
        canonical_json([float("inf")])
