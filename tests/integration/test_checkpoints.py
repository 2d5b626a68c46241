"""Ledger checkpoints: signed heads chained per tenant, exported, and a rewritten chain caught."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stellaorch.domain.canonical import canonical_json, sha256_hex
from stellaorch.domain.checkpoint import FIRST_PREV_HASH
from stellaorch.domain.ledger import GENESIS_HASH
from stellaorch.domain.providers import parse_utc
from stellaorch.engine.checkpoints import CheckpointLoop, CheckpointWriter, checkpoint_view
from stellaorch.engine.export import ExportWindow, export_lines, verify_export
from stellaorch.engine.export_manifest import ManifestBuilder
from stellaorch.security.keys import generate_key, newest_ed25519_key
from stellaorch.security.trust import key_id

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

WINDOW_US = (parse_utc("2000-01-01T00:00:00Z"), parse_utc("2100-01-01T00:00:00Z"))
PIPE = [{"id": "a", "plugin": "noop"}, {"id": "b", "plugin": "noop"}]


@pytest.fixture
async def harness(make_harness: MakeHarness, tmp_path: Path) -> Harness:
    """A harness whose keys dir holds the server's Ed25519 key."""
    keys = tmp_path / "keys"
    generate_key(keys)
    h = await make_harness(keys_dir=keys)
    for tenant in ("acme", "globex"):
        await h.publish(h.spec("pipe", PIPE, [("a", "b")]), tenant)
    return h


def server_key(h: Harness) -> Ed25519PrivateKey:
    key = newest_ed25519_key(h.orchestrator.env.settings.keys_dir)
    assert key is not None
    return key


def trusted(h: Harness) -> dict[str, Ed25519PublicKey]:
    public = server_key(h).public_key()
    return {key_id(public): public}


async def finished_runs(h: Harness, count: int, tenant: str = "acme") -> list[str]:
    created = [await h.create("pipe", {"n": n}, tenant=tenant) for n in range(count)]
    async with h.worker():
        for c in created:
            await h.wait_done(c.run.run_id, tenant=tenant)
    return [c.run.run_id for c in created]


async def export(h: Harness, tenant: str = "acme") -> list[bytes]:
    window = ExportWindow(tenant, *WINDOW_US)
    return [line async for line in export_lines(h.orchestrator.env.db, window)]


def with_manifest(body: list[bytes]) -> list[bytes]:
    """The lines with the manifest an attacker would recompute for them."""
    builder = ManifestBuilder(ExportWindow("acme", *WINDOW_US).labels)
    for line in body:
        if b'"checkpoint"' in line[:16]:
            builder.add_checkpoint(line)
        else:
            builder.add(line)
    return [*body, builder.manifest().line()]


def payload(line: bytes) -> dict[str, Any]:
    envelope = json.loads(line)["checkpoint"]
    from stellaorch.security.dsse import parse_envelope

    return dict(json.loads(parse_envelope(envelope).payload))


async def rewrite_chain(h: Harness, run_id: str) -> None:
    """The attack: edit a run's second entry in the store and re-hash the chain after it."""
    rows = await h.sql(
        "SELECT seq, body FROM ledger_entries WHERE run_id = :r ORDER BY seq", r=run_id
    )
    prev = GENESIS_HASH
    for row in rows:
        body = json.loads(row["body"])
        if row["seq"] == 2:
            body["data"] = {**body["data"], "note": "rewritten"}
        body["prevHash"] = prev
        text = canonical_json(body)
        prev = "sha256:" + sha256_hex(text)
        await h.sql(
            "UPDATE ledger_entries SET body = :b, entry_hash = :e WHERE run_id = :r AND seq = :s",
            b=text,
            e=prev,
            r=run_id,
            s=row["seq"],
        )
    await h.sql("UPDATE runs SET ledger_head = :e WHERE run_id = :r", e=prev, r=run_id)


# -- writing --------------------------------------------------------------------------
async def test_a_checkpoint_signs_the_heads_of_each_tenant_that_moved(harness: Harness) -> None:
    acme = await finished_runs(harness, 2)
    [globex] = await finished_runs(harness, 1, tenant="globex")

    written = await harness.orchestrator.checkpoints.write()

    assert [(row.tenant, row.seq) for row in written] == [("acme", 1), ("globex", 1)]
    document = checkpoint_view(written[0])["checkpoint"]
    heads = await harness.sql(
        "SELECT run_id, ledger_seq, ledger_head FROM runs WHERE tenant = 'acme' ORDER BY run_id"
    )
    assert [(r["runId"], r["seq"], r["entryHash"]) for r in document["runs"]] == [
        (h["run_id"], h["ledger_seq"], h["ledger_head"]) for h in heads
    ]
    assert {r["runId"] for r in document["runs"]} == set(acme)
    assert document["entries"] == sum(h["ledger_seq"] for h in heads)
    assert document["prevHash"] == FIRST_PREV_HASH
    assert globex not in json.dumps(document)  # a tenant's checkpoint holds only its own runs


async def test_checkpoints_chain_and_are_written_only_when_the_ledger_moved(
    harness: Harness,
) -> None:
    await finished_runs(harness, 1)
    [first] = await harness.orchestrator.checkpoints.write()
    assert await harness.orchestrator.checkpoints.write() == []

    [moved] = await finished_runs(harness, 1)
    [second] = await harness.orchestrator.checkpoints.write()

    document = checkpoint_view(second)["checkpoint"]
    assert (second.seq, document["prevHash"]) == (2, first.checkpoint_hash)
    assert [r["runId"] for r in document["runs"]] == [moved]  # only what moved since
    assert second.entries == first.entries + len(await harness.ledger(moved))


async def test_a_pass_covers_a_large_backlog_in_bounded_batches(harness: Harness) -> None:
    await finished_runs(harness, 3)
    writer = CheckpointWriter(harness.orchestrator.env)

    written = await writer.write(batch=4)

    assert [row.seq for row in written] == list(range(1, len(written) + 1))
    assert len(written) >= 3
    assert verify_export(await export(harness), trusted(harness)).ok


async def test_two_loops_on_one_store_write_one_chain(harness: Harness) -> None:
    env = harness.orchestrator.env
    loops = [CheckpointLoop(CheckpointWriter(env), 0.02, 5.0) for _ in range(2)]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        await finished_runs(harness, 3)
        await asyncio.sleep(0.3)
    finally:
        for loop in loops:
            loop.stop()
        await asyncio.gather(*tasks)
    rows = await harness.sql("SELECT seq FROM ledger_checkpoints WHERE tenant = 'acme'")
    assert sorted(r["seq"] for r in rows) == list(range(1, len(rows) + 1))
    report = verify_export(await export(harness), trusted(harness))
    assert report.ok, report
    assert report.checkpoints == len(rows) >= 1


# -- verifying ------------------------------------------------------------------------
async def test_an_export_with_checkpoints_verifies_against_the_server_key(
    harness: Harness,
) -> None:
    await finished_runs(harness, 2)
    await harness.orchestrator.checkpoints.write()

    report = verify_export(await export(harness), trusted(harness))

    assert (report.ok, report.count, report.checkpoints) == (True, 2, 1)


async def test_a_chain_rewritten_and_rehashed_after_a_checkpoint_is_caught(
    harness: Harness,
) -> None:
    harness.check_chains = False  # the store's chains verify on their own: that is the attack
    [victim, _] = await finished_runs(harness, 2)
    await harness.orchestrator.checkpoints.write()

    await rewrite_chain(harness, victim)
    lines = await export(harness)

    report = verify_export(lines, trusted(harness))
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith("checkpoint 1 (")
    assert f"run {victim} seq" in report.problem and "rewritten" in report.problem
    # Without its checkpoints the same rewrite is consistent: nothing else could find it.
    runs_only = [line for line in lines[:-1] if not line.startswith(b'{"checkpoint"')]
    assert verify_export(with_manifest(runs_only)).ok


async def test_a_run_removed_after_a_checkpoint_is_caught(harness: Harness) -> None:
    [gone, kept] = await finished_runs(harness, 2)
    await harness.orchestrator.checkpoints.write()
    lines = await export(harness)

    body = [line for line in lines[:-1] if json.loads(line).get("runId") != gone]
    report = verify_export(with_manifest(body), trusted(harness))

    assert not report.ok
    assert f"lists run {gone}" in str(report.problem) and "removed" in str(report.problem)
    assert kept


async def test_checkpoints_need_the_server_key_and_a_foreign_key_is_refused(
    harness: Harness,
) -> None:
    await finished_runs(harness, 1)
    await harness.orchestrator.checkpoints.write()
    lines = await export(harness)
    other = Ed25519PrivateKey.generate().public_key()

    no_key = verify_export(lines)
    foreign = verify_export(lines, {key_id(other): other})

    assert "no public key given" in str(no_key.problem)
    assert "signature does not verify" in str(foreign.problem)
    assert "checkpoint 1 (" in str(foreign.problem)


async def test_an_edited_or_dropped_checkpoint_is_caught(harness: Harness) -> None:
    for _ in range(3):
        await finished_runs(harness, 1)
        await harness.orchestrator.checkpoints.write()
    lines = await export(harness)
    cut = len(lines) - 4  # three checkpoint lines, then the manifest
    checkpoints = lines[cut:-1]

    envelope = json.loads(checkpoints[1])["checkpoint"]
    edited = dict(envelope, payload=envelope["payload"][:-4] + "AAA=")
    forged = [*lines[:cut], checkpoints[0], canonical_line(edited), checkpoints[2]]
    dropped = [*lines[:cut], checkpoints[0], checkpoints[2]]

    document = payload(checkpoints[1])
    document["entries"] += 1
    recounted = dict(envelope, payload=base64.b64encode(canonical_json(document).encode()).decode())
    resigned = [*lines[:cut], checkpoints[0], canonical_line(recounted), checkpoints[2]]

    forged_report = verify_export(with_manifest(forged), trusted(harness))
    resigned_report = verify_export(with_manifest(resigned), trusted(harness))
    dropped_report = verify_export(with_manifest(dropped), trusted(harness))
    assert not forged_report.ok and "checkpoint line 2" in str(forged_report.problem)
    assert str(resigned_report.problem).startswith("checkpoint 2 (")
    assert "signature does not verify" in str(resigned_report.problem)
    assert "checkpoint 3 (" in str(dropped_report.problem)
    assert "a checkpoint is missing" in str(dropped_report.problem)
    assert payload(checkpoints[2])["seq"] == 3


def canonical_line(envelope: dict[str, Any]) -> bytes:
    return canonical_json({"checkpoint": envelope}).encode() + b"\n"


# -- on demand, over the API ----------------------------------------------------------
async def test_an_admin_checkpoints_on_demand_and_sees_only_their_tenant(
    harness: Harness,
) -> None:
    import httpx

    from stellaorch.api.app import create_app
    from stellaorch.security.tokens import issue_token

    await finished_runs(harness, 1)
    [globex] = await finished_runs(harness, 1, tenant="globex")
    keys = harness.orchestrator.env.settings.keys_dir
    token = issue_token(
        keys, subject="ops", tenants=["acme"], scopes=["orchestrator:admin"],
        audience="stella-orchestrator",
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "X-Stella-Tenant": "acme"}
    transport = httpx.ASGITransport(app=create_app(harness.orchestrator))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        url = "/api/v1/orchestrator/ledger/checkpoints"
        unexplained = await http.post(url, headers=headers)
        done = await http.post(url, headers={**headers, "X-Stella-Operator-Reason": "audit"})
        again = await http.post(url, headers={**headers, "X-Stella-Operator-Reason": "audit"})

    assert unexplained.status_code == 400, unexplained.text
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["written"] is True and body["checkpoint"]["tenant"] == "acme"
    assert globex not in done.text
    assert again.json()["written"] is False
    assert again.json()["checkpointHash"] == body["checkpointHash"]
    audit = await harness.sql("SELECT action, reason FROM audit_log WHERE tenant = 'acme'")
    assert [(a["action"], a["reason"]) for a in audit] == [("ledger.checkpoint", "audit")] * 2
