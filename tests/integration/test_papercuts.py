"""CLI/API papercuts over HTTP: new signing keys without a restart, dagId case, run tokens
reused with another version."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, Api, assert_envelope, spec  # noqa: E402

from stellaorch.security.keys import generate_key  # noqa: E402

A = "acme"


async def test_a_key_generated_while_the_api_runs_is_trusted_without_a_restart(api: Api) -> None:
    generate_key(api.keys_dir)  # `stella orch keys generate`; new tokens use the newest key
    response = await api.client.get(f"{BASE}/runs", headers=api.headers(A))
    assert response.status_code == 200, response.text


async def test_an_uppercase_dag_id_is_refused_as_spec_1_says(api: Api) -> None:
    body = {"dagId": "ETL", "inputs": {}}
    response = await api.client.post(f"{BASE}/runs", json=body, headers=api.headers(A))
    assert response.status_code == 400, response.text
    assert_envelope(response)


async def test_a_run_token_of_another_version_is_a_clear_conflict(api: Api) -> None:
    for v in (1, 2):
        await api.publish(A, spec("etl", [{"id": "s", "plugin": "noop"}], version=v))
    first = await api.start(A, "etl", runToken="tok-1", version=1)
    again = await api.start(A, "etl", runToken="tok-1", version=1)
    assert again["runId"] == first["runId"]
    body = {"dagId": "etl", "inputs": {}, "runToken": "tok-1", "version": 2}
    response = await api.client.post(f"{BASE}/runs", json=body, headers=api.headers(A))
    assert response.status_code == 409
    error = assert_envelope(response)
    assert error["code"] == "RUN_TOKEN_CONFLICT" and "version 1" in error["message"]
