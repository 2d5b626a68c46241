"""Schemathesis fuzzing from the app's own OpenAPI document: no 5xx, every 4xx an envelope.

The test is synchronous on purpose: schemathesis drives the ASGI app on its own event-loop
thread, so the orchestrator is opened here and used only from that loop afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.python import asgi

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import BASE, ENVELOPE_CODE, api_settings, spec  # noqa: E402

from stellaorch.api.app import create_app  # noqa: E402
from stellaorch.domain.spec import parse_spec  # noqa: E402
from stellaorch.engine.app import Orchestrator  # noqa: E402
from stellaorch.engine.requests import RunRequest  # noqa: E402
from stellaorch.security.tokens import issue_token  # noqa: E402

TENANT = "acme"
EXAMPLES_PER_OPERATION = 15
# PostgreSQL answers each request several times slower here; the route logic is the same on
# both stores, so fewer examples there still exercise its SQL (and CI keeps its time budget).
EXAMPLES_ON_POSTGRESQL = 8
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def envelope_problem(body: bytes) -> str | None:
    """Why a 4xx body is not the error envelope, or None when it is."""
    try:
        document = json.loads(body)
        error = document["error"]
        assert set(document) == {"error"}
        assert re.match(ENVELOPE_CODE, error["code"])
        assert isinstance(error["message"], str) and error["message"]
        assert re.fullmatch(r"[0-9a-f]{32}", error["traceId"])
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"not an error envelope: {body[:300]!r}"
    return None


def judge(status: int, body: bytes) -> str | None:
    """What is wrong with one response, if anything."""
    if status >= 500:
        return f"server error {status}: {body[:300]!r}"
    if 400 <= status < 500:
        return envelope_problem(body)
    return None


async def seed(orch: Orchestrator) -> dict[str, str]:
    """A DAG and a queued run to aim at; returns their ids by path parameter name."""
    await orch.catalog.publish(TENANT, parse_spec(spec("d", [{"id": "a", "plugin": "noop"}])))
    created = await orch.runs.create(RunRequest(TENANT, "d", {"n": 1}))
    return {"dagId": "d", "version": "1", "runId": created.run.run_id, "stepId": "a"}


def strategies(operation: Any, known: dict[str, str]) -> list[tuple[str, Any]]:
    """Random inputs in both modes, plus valid inputs aimed at the seeded ids."""
    out = [(m.value, operation.as_strategy(generation_mode=m)) for m in MODES]
    names = set(re.findall(r"{(\w+)}", operation.path))
    aimed = {k: v for k, v in known.items() if k in names}
    if aimed and names <= set(aimed):
        out.append(("seeded", operation.as_strategy(path_parameters=aimed)))
    return out


def fuzz(
    strategy: Any, mode: str, headers: dict[str, str], failures: list[str], examples: int
) -> None:
    """Send bounded, derandomised examples of one strategy; record every bad response."""

    @given(case=strategy)
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # record failures; shrinking costs time
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        # Ours win over generated ones: auth is fuzzed in test_api_auth, here the inputs are.
        case.headers = {**(case.headers or {}), **headers}
        where = f"[{mode}] {case.method} {case.formatted_path}"
        try:
            response = case.call()
        except Exception as exc:  # the in-process client re-raises what a server turns into 500
            failures.append(f"{where}: app raised {exc!r}")
            return
        problem = judge(response.status_code, response.content)
        if problem:
            failures.append(f"{where}: {problem}")

    # Unsatisfiable: nothing of this mode can be generated for the operation (e.g. no inputs).
    with contextlib.suppress(Unsatisfiable):
        check()


def test_fuzzed_requests_never_get_a_5xx_and_4xx_are_envelopes(
    store_url: str, keys_dir: Path
) -> None:
    # A claim long-polls up to 30 s by default: longer than the fuzzer waits for an answer.
    config = api_settings(store_url, keys_dir, task_claim_max_wait_seconds=0.5)
    orch = Orchestrator.open(config)
    try:
        known = asyncio.run(seed(orch))
        app = create_app(orch)
        token = issue_token(
            keys_dir,
            subject="fuzzer",
            tenants=[TENANT],
            scopes=["orchestrator:admin"],
            audience=config.audience,
        )
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Stella-Tenant": TENANT,
            "X-Stella-Operator-Reason": "fuzzing",
        }
        schema = schemathesis.openapi.from_asgi(f"{BASE}/.well-known/openapi", app)
        failures: list[str] = []
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        sqlite = store_url.startswith("sqlite")
        examples = EXAMPLES_PER_OPERATION if sqlite else EXAMPLES_ON_POSTGRESQL
        for operation in operations:
            for mode, strategy in strategies(operation, known):
                fuzz(strategy, mode, headers, failures, examples)
        unique = sorted(set(failures))
        assert not unique, f"{len(unique)} bad responses:\n" + "\n".join(unique[:40])
    finally:
        asgi.shutdown_lifespans()  # the app's shutdown, on the loop that started it
        orch.env.db.close()
