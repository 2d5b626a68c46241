"""What an outsider sends is validated at the edge: 400 envelopes, never 500 (issue 9 §3)."""

from __future__ import annotations

from typing import Any

import pytest
from api_fixtures import BASE, Api, api, assert_envelope, keys_dir, make_api, spec

from stellaorch.api.paging import encode_token

__all__ = ["api", "keys_dir", "make_api"]


async def post(api: Api, path: str, body: str) -> Any:
    """POST raw JSON text as an admin of acme."""
    headers = {**api.headers("acme"), "Content-Type": "application/json"}
    return await api.client.post(f"{BASE}{path}", content=body, headers=headers)


@pytest.mark.parametrize("depth", [65, 500, 999, 100_000])
async def test_deep_json_is_a_400_at_every_depth(api: Api, depth: int) -> None:
    await api.publish("acme", spec("d", [{"id": "a", "plugin": "noop"}]))
    deep = "[" * depth + "]" * depth
    inputs = await post(api, "/runs", '{"dagId": "d", "inputs": {"x": ' + deep + "}}")
    document = '{"dagId": "e", "version": 1, "steps": [{"id": "a", "plugin": "noop", '
    published = await post(api, "/dags", document + '"with": {"outputs": ' + deep + "}}]}")
    for response in (inputs, published):
        assert response.status_code == 400, response.text
        assert assert_envelope(response)["code"] == "NESTING_TOO_DEEP"


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"id": "a", "plugin": "nope"}, "steps[0].plugin"),
        ({"id": "a", "plugin": "sleep", "with": {"seconds": -1}}, "steps[0].with.seconds"),
        ({"id": "a", "plugin": "sleep", "with": {"second": 1}}, "steps[0].with.second"),
        ({"id": "a", "plugin": "fail", "with": {"retryable": "yes"}}, "steps[0].with.retryable"),
        ({"id": "a", "plugin": "noop", "with": {"outputs": [1]}}, "steps[0].with.outputs"),
        ({"id": "a", "plugin": "script", "with": {"command": "echo ${inputs.x}"}}, "command"),
        ({"id": "a", "plugin": "noop", "concurrency": 2**70}, "steps[0].concurrency"),
    ],
)
async def test_a_spec_that_cannot_run_is_refused_at_publish(
    api: Api, step: dict[str, Any], path: str
) -> None:
    response = await api.client.post(
        f"{BASE}/dags", json=spec("bad", [step]), headers=api.headers("acme")
    )
    assert response.status_code == 400, response.text
    error = assert_envelope(response)
    assert error["code"] == "DAG_SPEC_INVALID"
    assert any(path in problem["path"] for problem in error["details"]["errors"]), error
    listed = await api.client.get(f"{BASE}/dags", headers=api.headers("acme"))
    assert "bad" not in listed.text


async def test_a_whole_value_reference_is_checked_when_the_run_starts(api: Api) -> None:
    step = {"id": "a", "plugin": "sleep", "with": {"seconds": "${inputs.s}"}}
    await api.publish("acme", spec("later", [step]))
    api.start_worker()
    run = await api.start("acme", "later", {"s": -1})
    assert await api.wait("acme", run["runId"]) == "failed"


# A page token is opaque but comes back from the client: its numbers reach the store's
# signed 64-bit columns, so one past that range is a 400, like any other forged token.
HUGE_POSITIONS = [
    ("/runs", [10**30, "r"]),
    ("/runs", [2**63, "r"]),
    ("/audit", [10**25]),
    ("/audit", [-(2**63) - 1]),
    ("/dags", ["d", -(10**30)]),
]


@pytest.mark.parametrize(("path", "position"), HUGE_POSITIONS, ids=lambda v: str(v)[:24])
async def test_a_page_token_with_an_out_of_range_number_is_400(
    api: Api, path: str, position: list[Any]
) -> None:
    token = encode_token(position)
    response = await api.client.get(
        f"{BASE}{path}", params={"page_token": token}, headers=api.headers("acme")
    )
    assert response.status_code == 400, response.text
    assert assert_envelope(response)["code"] == "VALIDATION_FAILED"


async def test_a_page_token_at_the_edge_of_the_range_is_accepted(api: Api) -> None:
    token = encode_token([2**63 - 1])
    response = await api.client.get(
        f"{BASE}/audit", params={"page_token": token}, headers=api.headers("acme")
    )
    assert response.status_code == 200, response.text
