"""Plugins as runs use them: identities in views, ledger and export; bundles; inline scripts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from bundle_fakes import FakeBundles
from stellaorch.domain.canonical import sha256_hex
from stellaorch.domain.errors import SpecInvalid
from stellaorch.domain.ledger import (
    GENESIS_HASH,
    EntryDraft,
    EntryType,
    StoredEntry,
    seal,
    verify_chain,
)
from stellaorch.domain.projection import state_problem
from stellaorch.engine.export import ExportWindow, export_lines, verify_export
from stellaorch.plugins.bundle import BundlePlugins
from stellaorch.plugins.script import ScriptPlugin

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

NOOP = {"kind": "builtin", "name": "noop", "version": "1", "digest": None}
ECHO = '#!/bin/sh\nprintf \'{"said": "%s"}\\n\' "$1"\n'


@pytest.fixture
def bundles() -> Iterator[FakeBundles]:
    """A fake bundle source (acme has `echo@1.0.0`)."""
    source = FakeBundles()
    source.add("acme", "echo", "1.0.0", {"run": (ECHO, 0o644)})
    yield source
    source.close()


def with_bundles(harness: Harness, bundles: FakeBundles) -> None:
    """Serve `bundles` to the harness's publish checks and workers."""
    orch = harness.orchestrator
    runner = ScriptPlugin(sandbox=orch.sandbox)
    orch.plugins.bundles = BundlePlugins(bundles, runner)


def bundle_dag(harness: Harness, dag_id: str = "bundled") -> dict[str, Any]:
    """One step running `echo@1.0.0` with an argument from the inputs."""
    step = {"id": "say", "plugin": "echo@1.0.0", "with": {"args": ["${inputs.word}"]}}
    return harness.spec(dag_id, [step])


async def test_a_builtin_attempt_records_its_identity_in_view_and_ledger(harness: Harness) -> None:
    spec = harness.spec("one", [{"id": "a", "plugin": "noop"}])
    view = await harness.run_to_end(spec)
    step = harness.step(view, "a")
    assert step["plugin"] == NOOP and step["attempts"][0]["plugin"] == NOOP
    ended = [e for e in await harness.ledger(view["runId"]) if e["type"] == "step.succeeded"]
    assert ended[0]["data"]["plugin"] == NOOP


async def test_a_failed_attempt_records_its_identity_too(harness: Harness) -> None:
    spec = harness.spec("bad", [{"id": "a", "plugin": "fail", "retry": {"maxAttempts": 2,
        "backoff": {"initialMs": 0}}, "with": {"retryable": True}}])  # fmt: skip
    view = await harness.run_to_end(spec)
    entries = await harness.ledger(view["runId"])
    fail = {"kind": "builtin", "name": "fail", "version": "1", "digest": None}
    assert [e["data"]["plugin"] for e in entries if e["type"] in ("step.retrying", "step.failed")
            and e["stepId"] == "a"] == [fail, fail]  # fmt: skip
    assert [a["plugin"] for a in harness.step(view, "a")["attempts"]] == [fail, fail]


async def test_the_export_carries_identities_and_verifies(harness: Harness) -> None:
    view = await harness.run_to_end(harness.spec("exp", [{"id": "a", "plugin": "noop"}]))
    window = ExportWindow(harness.tenant, 0, 4_102_444_800 * 10**6)  # until 2100
    lines = [line async for line in export_lines(harness.orchestrator.env.db, window)]
    doc = json.loads(lines[0])
    assert doc["runId"] == view["runId"]
    assert doc["steps"][0]["attempts"][0]["plugin"] == NOOP
    assert verify_export(lines).ok


def test_an_entry_and_view_from_before_plugin_identities_still_verify() -> None:
    draft = EntryDraft(
        run_id="r1", tenant="acme", dag_id="d", trace_id="t" * 32,
        entry_type=EntryType.STEP_SUCCEEDED, status="succeeded", ts_us=1_700_000_000_000_000,
        step_id="a", attempt=1, data={"outputsHash": "sha256:" + "1" * 64},
    )  # fmt: skip
    entry = seal(draft, 1, GENESIS_HASH)
    assert "plugin" not in entry.body  # an old entry's body, byte for byte
    assert entry.entry_hash == "sha256:" + sha256_hex(entry.body)
    assert verify_chain("r1", [StoredEntry("r1", 1, entry.body, entry.entry_hash)]).ok
    old_step = {"stepId": "a", "status": "succeeded", "attempt": 1,
                "outputsHash": "sha256:" + "1" * 64, "outputs": None}  # fmt: skip
    problem = state_problem({"steps": [old_step]}, [json.loads(entry.body)])
    assert problem is None or "plugin" not in problem


# --- bundles ------------------------------------------------------------------------------
async def test_publish_of_a_bundle_step_needs_the_tenants_bundle(
    harness: Harness, bundles: FakeBundles
) -> None:
    with_bundles(harness, bundles)
    await harness.publish(bundle_dag(harness), "acme")
    with pytest.raises(SpecInvalid) as raised:
        await harness.publish(bundle_dag(harness), "globex")
    problem = raised.value.details["errors"][0]
    assert problem["path"] == "steps[0].plugin" and "globex" in problem["message"]


async def test_publish_of_an_unknown_bundle_without_a_source_is_plugin_not_found(
    harness: Harness,
) -> None:
    with pytest.raises(SpecInvalid, match=r"echo@1\.0\.0"):
        await harness.publish(bundle_dag(harness))


@pytest.mark.usefixtures("require_sandbox")
async def test_a_bundle_step_runs_and_records_the_bundle_digest(
    harness: Harness, bundles: FakeBundles
) -> None:
    with_bundles(harness, bundles)
    view = await harness.run_to_end(bundle_dag(harness), {"word": "$(id); hi"})
    step = harness.step(view, "say")
    assert view["status"] == "completed" and step["outputs"] == {"said": "$(id); hi"}
    digest = bundles.bundles[("acme", "echo", "1.0.0")].digest
    expected = {"kind": "bundle", "name": "echo", "version": "1.0.0", "digest": digest}
    assert step["plugin"] == expected
    ended = [e for e in await harness.ledger(view["runId"]) if e["type"] == "step.succeeded"]
    assert ended[0]["data"]["plugin"] == expected


@pytest.mark.parametrize("code", ["BUNDLE_REVOKED", "BUNDLE_UNVERIFIED", "BUNDLE_NOT_FOUND"])
async def test_a_bundle_that_no_longer_loads_fails_the_attempt_without_retry(
    harness: Harness, bundles: FakeBundles, code: str
) -> None:
    with_bundles(harness, bundles)
    spec = bundle_dag(harness)
    spec["steps"][0]["retry"] = {"maxAttempts": 3}
    await harness.publish(spec)
    bundles.broken[("acme", "echo", "1.0.0")] = code  # revoked, tampered or removed since
    created = await harness.create("bundled", {"word": "x"})
    async with harness.worker():
        view = await harness.wait_done(created.run.run_id)
    step = harness.step(view, "say")
    assert view["status"] == "failed" and step["attempt"] == 1
    assert step["error"]["code"] == code and step["error"]["retryable"] is False
    assert step["attempts"][0]["plugin"] is None


# --- inline scripts behind the setting ------------------------------------------------------
def inline_dag(harness: Harness) -> dict[str, Any]:
    """One inline shell step."""
    return harness.spec("inline", [{"id": "s", "plugin": "script", "with": {"command": "true"}}])


async def test_publish_of_an_inline_script_is_refused_where_disabled(
    make_harness: MakeHarness,
) -> None:
    harness = await make_harness(inline_scripts=False)
    with pytest.raises(SpecInvalid) as raised:
        await harness.publish(inline_dag(harness))
    problem = raised.value.details["errors"][0]
    assert problem["path"] == "steps[0].with"
    assert "STELLA_ORCH_INLINE_SCRIPTS" in problem["message"]


async def test_an_inline_script_attempt_fails_where_disabled(make_harness: MakeHarness) -> None:
    allowed = await make_harness()
    await allowed.publish(inline_dag(allowed))  # published where inline scripts are on
    url = allowed.orchestrator.env.settings.database_url
    created = await allowed.create("inline")
    refusing = await make_harness(url, inline_scripts=False)  # a worker process of its own
    async with refusing.worker():
        view = await refusing.wait_done(created.run.run_id)
    error = refusing.step(view, "s")["error"]
    assert error["code"] == "INLINE_SCRIPTS_DISABLED" and error["retryable"] is False
