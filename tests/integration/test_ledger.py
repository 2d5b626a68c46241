"""The run ledger: chains verify, tampering is found, rows are never rewritten (item 5)."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.exc import DBAPIError

from stellaorch.domain.canonical import sha256_hex
from stellaorch.engine import claim

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness


def pipeline(harness: Harness) -> dict[str, Any]:
    steps = [{"id": s, "plugin": "noop", "with": {"outputs": {"name": s}}} for s in "abcd"]
    return harness.spec("pipe", steps, [("a", "b"), ("b", "c"), ("c", "d")])


async def finished_run(harness: Harness) -> str:
    view = await harness.run_to_end(pipeline(harness))
    assert view["status"] == "completed"
    return str(view["runId"])


async def entry_seq(harness: Harness, run_id: str, entry_type: str, step_id: str) -> int:
    ledger = await harness.ledger(run_id)
    return int(next(e["seq"] for e in ledger if e["type"] == entry_type and e["stepId"] == step_id))


# -- verification -------------------------------------------------------------------------
async def test_chain_of_a_finished_run_verifies(harness: Harness) -> None:
    run_id = await finished_run(harness)

    report = await harness.runs.verify(harness.tenant, run_id)

    ledger = await harness.ledger(run_id)
    assert report.ok
    assert report.count == len(ledger) == ledger[-1]["seq"]
    assert [e["seq"] for e in ledger] == list(range(1, len(ledger) + 1))
    assert ledger[-1]["type"] == "run.completed"


async def test_ledger_of_a_one_step_run_records_every_change(harness: Harness) -> None:
    view = await harness.run_to_end(harness.spec("one", [{"id": "only", "plugin": "noop"}]))

    ledger = await harness.ledger(view["runId"])

    assert [(e["type"], e["status"], e["stepId"]) for e in ledger] == [
        ("run.created", "queued", None),
        ("step.queued", "queued", "only"),
        ("run.started", "running", None),
        ("step.running", "running", "only"),
        ("step.succeeded", "succeeded", "only"),
        ("run.completed", "completed", None),
    ]
    assert {(e["tenant"], e["dagId"], e["traceId"]) for e in ledger} == {
        (harness.tenant, "one", view["traceId"])
    }
    assert ledger[-1]["data"]["outputsHash"] == view["outputsHash"]
    assert [e["timestamp"] for e in ledger] == sorted(e["timestamp"] for e in ledger)


async def test_each_entry_links_to_the_previous_one(harness: Harness) -> None:
    run_id = await finished_run(harness)

    rows = await harness.sql(
        "SELECT body, entry_hash FROM ledger_entries WHERE run_id = :r ORDER BY seq", r=run_id
    )

    assert rows[0]["body"].count('"prevHash":"sha256:' + "0" * 64 + '"') == 1
    for earlier, later in pairwise(rows):
        assert f'"prevHash":"{earlier["entry_hash"]}"' in later["body"]
    for row in rows:
        assert row["entry_hash"] == "sha256:" + sha256_hex(row["body"])


# -- tampering ----------------------------------------------------------------------------
async def test_edited_entry_body_is_detected_at_its_seq(harness: Harness) -> None:
    run_id = await finished_run(harness)
    harness.check_chains = False
    seq = await entry_seq(harness, run_id, "step.succeeded", "b")

    await harness.sql(
        "UPDATE ledger_entries SET body = replace(body, '\"succeeded\"', '\"failed\"') "
        "WHERE run_id = :r AND seq = :s",
        r=run_id,
        s=seq,
    )

    report = await harness.runs.verify(harness.tenant, run_id)
    assert not report.ok
    assert report.broken_seq == seq


async def test_edited_entry_with_recomputed_hash_breaks_the_next_link(harness: Harness) -> None:
    run_id = await finished_run(harness)
    harness.check_chains = False
    seq = await entry_seq(harness, run_id, "step.succeeded", "b")
    (row,) = await harness.sql(
        "SELECT body FROM ledger_entries WHERE run_id = :r AND seq = :s", r=run_id, s=seq
    )
    forged = row["body"].replace('"succeeded"', '"failed"')

    await harness.sql(
        "UPDATE ledger_entries SET body = :b, entry_hash = :h WHERE run_id = :r AND seq = :s",
        b=forged,
        h="sha256:" + sha256_hex(forged),
        r=run_id,
        s=seq,
    )

    report = await harness.runs.verify(harness.tenant, run_id)
    assert not report.ok
    assert report.broken_seq == seq + 1


async def test_deleted_last_entry_is_detected(harness: Harness) -> None:
    run_id = await finished_run(harness)
    harness.check_chains = False
    last = len(await harness.ledger(run_id))

    await harness.sql("DELETE FROM ledger_entries WHERE run_id = :r AND seq = :s", r=run_id, s=last)

    report = await harness.runs.verify(harness.tenant, run_id)
    assert not report.ok
    assert report.broken_seq == last


async def test_deleted_middle_entry_is_detected_at_the_missing_seq(harness: Harness) -> None:
    run_id = await finished_run(harness)
    harness.check_chains = False
    seq = await entry_seq(harness, run_id, "step.running", "c")

    await harness.sql("DELETE FROM ledger_entries WHERE run_id = :r AND seq = :s", r=run_id, s=seq)

    report = await harness.runs.verify(harness.tenant, run_id)
    assert not report.ok
    assert report.broken_seq == seq


async def test_tampering_with_one_run_leaves_other_chains_intact(harness: Harness) -> None:
    tampered, intact = await finished_run(harness), await finished_run(harness)
    harness.check_chains = False

    await harness.sql("DELETE FROM ledger_entries WHERE run_id = :r AND seq = 2", r=tampered)

    assert not (await harness.runs.verify(harness.tenant, tampered)).ok
    assert (await harness.runs.verify(harness.tenant, intact)).ok


# -- append-only --------------------------------------------------------------------------
async def test_no_code_path_updates_or_deletes_ledger_rows(make_harness: MakeHarness) -> None:
    harness = await make_harness(lease_ttl_seconds=0.4)
    await harness.install("ledger_append_only")
    specs = {
        "success": pipeline(harness),
        "retry": harness.spec(
            "retry",
            [
                {
                    "id": "flaky",
                    "plugin": "fail",
                    "with": {"untilAttempt": 2, "retryable": True},
                    "retry": {"maxAttempts": 2, "backoff": {"initialMs": 10}},
                }
            ],
        ),
        "failure": harness.spec(
            "failure",
            [
                {"id": "bad", "plugin": "fail"},
                {"id": "nap", "plugin": "sleep", "with": {"seconds": 30}},
                {"id": "after", "plugin": "noop"},
            ],
            [("bad", "after")],
        ),
        "timeout": harness.spec(
            "timeout",
            [{"id": "nap", "plugin": "sleep", "with": {"seconds": 5}, "timeoutSeconds": 0.2}],
        ),
        "cancel": harness.spec(
            "cancel", [{"id": "nap", "plugin": "sleep", "with": {"seconds": 30}}]
        ),
        "lost": harness.spec("lost", [{"id": "work", "plugin": "noop"}]),
        "queued-cancel": harness.spec("queued-cancel", [{"id": "never", "plugin": "noop"}]),
    }
    for spec in specs.values():
        await harness.publish(spec)
    env = harness.orchestrator.env
    lost = (await harness.create("lost")).run.run_id
    await env.db.transact(lambda conn: claim.claim(conn, env, "dead-worker", 1))
    queued = (await harness.create("queued-cancel")).run.run_id
    await harness.runs.cancel(harness.tenant, queued)
    run_ids = {
        name: (await harness.create(spec["dagId"])).run.run_id
        for name, spec in list(specs.items())[:5]
    }

    async with harness.worker():
        await harness.wait_for_step(run_ids["cancel"], "nap", "running")
        await harness.runs.cancel(harness.tenant, run_ids["cancel"])
        ends = {n: (await harness.wait_done(r))["status"] for n, r in run_ids.items()}
        ends["lost"] = (await harness.wait_done(lost))["status"]
        await asyncio.sleep(0.1)

    assert ends == {
        "success": "completed",
        "retry": "completed",
        "failure": "failed",
        "timeout": "failed",
        "cancel": "cancelled",
        "lost": "completed",
    }
    reports = await harness.verify_every_run()
    assert len(reports) == 7
    assert all(r.ok for r in reports), reports
    with pytest.raises(DBAPIError):  # the guard was live all along
        await harness.sql("UPDATE ledger_entries SET status = status")
