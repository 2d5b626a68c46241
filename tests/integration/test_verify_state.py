"""Verification ties the rows and stored content of a run to its ledger (issue 9, item 3).

Each test edits the store beside an intact chain, as someone with write access to the
database could, and expects `verify` to name what no longer matches.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from stellaorch.domain.canonical import hash_json

if TYPE_CHECKING:
    from conftest import Harness


async def finished_run(harness: Harness) -> str:
    steps = [{"id": s, "plugin": "noop", "with": {"outputs": {"name": s}}} for s in "abc"]
    spec = harness.spec("tamper", steps, [("a", "b"), ("b", "c")])
    view = await harness.run_to_end(spec, inputs={"day": "monday"})
    assert view["status"] == "completed"
    harness.check_chains = False  # the test edits the store on purpose
    return str(view["runId"])


async def reason_after(harness: Harness, run_id: str, statement: str, **params: Any) -> str:
    """Apply one edit and return why verification now fails."""
    assert (await harness.runs.verify(harness.tenant, run_id)).ok
    await harness.sql(statement, r=run_id, **params)
    report = await harness.runs.verify(harness.tenant, run_id)
    assert not report.ok, f"verify said ok after: {statement}"
    assert report.check in {"state", "content"}
    assert report.reason is not None
    return report.reason


async def test_an_untouched_run_verifies_every_check(harness: Harness) -> None:
    run_id = await finished_run(harness)

    report = await harness.runs.verify(harness.tenant, run_id)

    assert report.ok and report.check is None and report.reason is None


@pytest.mark.parametrize(
    ("statement", "said"),
    [
        ("UPDATE runs SET status = 'failed' WHERE run_id = :r", "status 'failed'"),
        ("UPDATE runs SET outputs_hash = 'sha256:' || :z WHERE run_id = :r", "outputsHash"),
        ("UPDATE runs SET run_token = 'forged' WHERE run_id = :r", "runToken 'forged'"),
        ("UPDATE runs SET dag_version = '9.9.9' WHERE run_id = :r", "dagVersion '9.9.9'"),
        (
            "UPDATE step_executions SET status = 'failed' WHERE run_id = :r AND step_id = 'b'",
            "step b is 'failed'",
        ),
        (
            "UPDATE step_executions SET attempt = 2 WHERE run_id = :r AND step_id = 'c'",
            "step c is at attempt 2",
        ),
    ],
)
async def test_an_edited_row_is_found(harness: Harness, statement: str, said: str) -> None:
    run_id = await finished_run(harness)

    reason = await reason_after(harness, run_id, statement, z="0" * 64)

    assert said in reason


async def test_a_removed_step_is_found(harness: Harness) -> None:
    run_id = await finished_run(harness)
    await harness.sql("DELETE FROM attempts WHERE run_id = :r AND step_id = 'c'", r=run_id)
    await harness.sql("DELETE FROM step_executions WHERE run_id = :r AND step_id = 'c'", r=run_id)

    report = await harness.runs.verify(harness.tenant, run_id)

    assert not report.ok and report.check == "state"
    assert "step c is in its ledger but has no step record" in str(report.reason)


async def test_a_removed_attempt_is_found_by_the_plugin_its_entry_names(harness: Harness) -> None:
    run_id = await finished_run(harness)

    reason = await reason_after(
        harness, run_id, "DELETE FROM attempts WHERE run_id = :r AND step_id = 'c'"
    )

    assert "step c ran plugin None but its ledger says" in reason


async def test_an_edited_plugin_identity_is_found(harness: Harness) -> None:
    run_id = await finished_run(harness)
    forged = '{"kind":"builtin","name":"noop","version":"2","digest":null}'

    reason = await reason_after(
        harness,
        run_id,
        "UPDATE attempts SET plugin_json = :p WHERE run_id = :r AND step_id = 'b'",
        p=forged,
    )

    assert "step b ran plugin" in reason and "'version': '1'" in reason


async def test_edited_inputs_are_found(harness: Harness) -> None:
    run_id = await finished_run(harness)

    reason = await reason_after(
        harness, run_id, "UPDATE runs SET inputs_json = :j WHERE run_id = :r", j='{"day":"sunday"}'
    )

    assert "inputs do not match inputsHash" in reason


async def test_edited_outputs_are_found(harness: Harness) -> None:
    run_id = await finished_run(harness)

    reason = await reason_after(
        harness,
        run_id,
        "UPDATE step_executions SET outputs_json = :j WHERE run_id = :r AND step_id = 'b'",
        j='{"name":"forged"}',
    )

    assert "step b outputs do not match their outputsHash" in reason


@pytest.mark.parametrize(
    ("table", "where", "said"),
    [
        ("runs", "", "inputsHash"),
        ("step_executions", " AND step_id = 'b'", "step b outputsHash"),
    ],
)
async def test_edited_content_with_a_recomputed_hash_is_found(
    harness: Harness, table: str, where: str, said: str
) -> None:
    run_id = await finished_run(harness)
    column = "inputs" if table == "runs" else "outputs"
    forged = {"name": "forged"}

    reason = await reason_after(
        harness,
        run_id,
        f"UPDATE {table} SET {column}_json = :j, {column}_hash = :h WHERE run_id = :r{where}",
        j=json.dumps(forged),
        h=hash_json(forged),
    )

    assert said in reason and "but its ledger says" in reason


async def test_an_edited_log_is_found(harness: Harness) -> None:
    spec = harness.spec("logs", [{"id": "say", "plugin": "script", "with": {"command": "echo hi"}}])
    view = await harness.run_to_end(spec)
    assert view["status"] == "completed", view
    harness.check_chains = False
    run_id, ref = view["runId"], view["steps"][0]["logsRef"]
    assert ref

    reason = await reason_after(
        harness,
        run_id,
        "UPDATE blobs SET content = :c WHERE tenant = :t AND hash = :h",
        c=b"forged\n",
        t=harness.tenant,
        h=ref,
    )

    assert f"log {ref} does not match its hash" in reason


async def test_a_removed_log_is_found(harness: Harness) -> None:
    spec = harness.spec("logs", [{"id": "say", "plugin": "script", "with": {"command": "echo hi"}}])
    view = await harness.run_to_end(spec)
    harness.check_chains = False
    run_id, ref = view["runId"], view["steps"][0]["logsRef"]

    reason = await reason_after(
        harness,
        run_id,
        "DELETE FROM blobs WHERE tenant = :t AND hash = :h",
        t=harness.tenant,
        h=ref,
    )

    assert f"log {ref} is missing" in reason


async def test_tampering_with_one_run_leaves_the_others_verified(harness: Harness) -> None:
    tampered, intact = await finished_run(harness), await finished_run(harness)

    await harness.sql("UPDATE runs SET status = 'cancelled' WHERE run_id = :r", r=tampered)

    assert not (await harness.runs.verify(harness.tenant, tampered)).ok
    assert (await harness.runs.verify(harness.tenant, intact)).ok
