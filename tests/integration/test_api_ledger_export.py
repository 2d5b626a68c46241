"""GET /ledger/export: ordered NDJSON runs with events inline, a manifest, and its verification."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from stellaorch.api.app import create_app
from stellaorch.domain.providers import IdProvider, ManualClock, parse_utc
from stellaorch.engine import claim, create
from stellaorch.engine.export import ExportWindow, export_lines, verify_export, write_export
from stellaorch.engine.requests import Created, RunRequest
from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token

if TYPE_CHECKING:
    from conftest import Harness, MakeHarness

BASE = "/api/v1/orchestrator"
ADMIN = ["orchestrator:admin"]
T0 = parse_utc("2026-01-01T00:00:00Z")
SECOND = 1_000_000
WINDOW = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}


@dataclass
class Api:
    """An app on a real store, with tokens from a local key."""

    harness: Harness
    app: FastAPI
    keys: Path

    def headers(self, tenant: str = "acme", scopes: list[str] = ADMIN) -> dict[str, str]:
        token = issue_token(
            self.keys, subject="t", tenants=[tenant], scopes=scopes, audience="stella-orchestrator"
        )
        return {"Authorization": f"Bearer {token}", "X-Stella-Tenant": tenant}

    async def export(self, params: dict[str, str] | None = None, **headers: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://t{BASE}") as http:
            return await http.get(
                "/ledger/export",
                params=WINDOW if params is None else params,
                headers=self.headers(**headers),
            )


@pytest.fixture
async def api(make_harness: MakeHarness, tmp_path: Path) -> Api:
    keys = tmp_path / "keys"
    generate_key(keys)
    harness = await make_harness(keys_dir=keys)
    for tenant in ("acme", "globex"):
        steps = [{"id": "a", "plugin": "noop"}, {"id": "b", "plugin": "noop"}]
        await harness.publish(harness.spec("pipe", steps, [("a", "b")]), tenant)
    return Api(harness, create_app(harness.orchestrator), keys)


async def start_runs(
    harness: Harness,
    count: int,
    at_us: int,
    tenant: str = "acme",
    first: int = 0,
    ids_at_us: int | None = None,
) -> list[str]:
    """Create `count` runs and start them (their first step leased) at time `at_us`."""
    env = harness.orchestrator.env
    env.clock = ManualClock(at_us)
    if ids_at_us is not None:  # run ids (UUIDv7) from another time than the start
        env.ids = IdProvider(ManualClock(ids_at_us))
    requests = [RunRequest(tenant, "pipe", {"n": first + n}) for n in range(count)]
    created = await env.db.transact(lambda c: create.create_runs(c, env, requests))
    await env.db.transact(lambda c: claim.claim(c, env, "test-worker", count))
    return [c.run.run_id for c in created if isinstance(c, Created)]


def lines_of(response: httpx.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return response.content.splitlines(keepends=True)


def rebuild_manifest(run_lines: list[bytes]) -> bytes:
    """The manifest line as docs/ledger-export.md defines it, computed independently."""
    digests = [hashlib.sha256(line.rstrip(b"\n")).hexdigest() for line in run_lines]
    manifest = {
        "count": len(run_lines),
        "sha256": hashlib.sha256(b"".join(run_lines)).hexdigest(),
        "rootHash": "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest(),
        "checkpoints": 0,
        "from": "2026-01-01T00:00:00.000Z",
        "to": "2026-01-02T00:00:00.000Z",
    }
    return (
        json.dumps({"manifest": manifest}, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    )


# -- content and order --------------------------------------------------------------------
async def test_export_lists_runs_by_started_time_then_run_id(api: Api) -> None:
    h = api.harness
    late = await start_runs(h, 2, T0 + 20 * SECOND)
    early = await start_runs(h, 3, T0 + 10 * SECOND, first=2)  # same millisecond: by runId

    lines = lines_of(await api.export())

    runs = [json.loads(line) for line in lines[:-1]]
    assert [r["runId"] for r in runs] == sorted(early) + sorted(late)
    assert [r["startedUtc"] for r in runs] == ["2026-01-01T00:00:10.000Z"] * 3 + [
        "2026-01-01T00:00:20.000Z"
    ] * 2
    assert set(json.loads(lines[-1])) == {"manifest"}


async def test_runs_started_in_one_millisecond_go_by_run_id_not_by_microsecond(api: Api) -> None:
    h = api.harness
    [sooner] = await start_runs(h, 1, T0 + 100, ids_at_us=T0 + SECOND)
    [later] = await start_runs(h, 1, T0 + 900, ids_at_us=T0)
    assert later < sooner

    lines = lines_of(await api.export())

    assert [json.loads(line)["runId"] for line in lines[:-1]] == [later, sooner]
    assert verify_export(lines).ok


async def test_each_line_holds_the_run_its_steps_and_its_ledger_in_chain_order(api: Api) -> None:
    h = api.harness
    [run_id] = await start_runs(h, 1, T0 + SECOND)

    [line, _] = lines_of(await api.export())

    run = json.loads(line)
    assert {k: v for k, v in run.items() if k not in ("events", "ledgerHead")} == await h.view(
        run_id
    )
    assert [s["stepId"] for s in run["steps"]] == ["a", "b"]
    assert run["steps"][0]["attempts"][0]["status"] == "running"
    ledger = await h.ledger(run_id)
    assert [{k: v for k, v in e.items() if k != "entryHash"} for e in run["events"]] == ledger
    assert [e["seq"] for e in run["events"]] == [1, 2, 3, 4]
    assert run["ledgerHead"] == run["events"][-1]["entryHash"]


async def test_window_holds_runs_started_from_from_and_before_to(api: Api) -> None:
    h = api.harness
    await start_runs(h, 1, T0 - 1)
    inside = await start_runs(h, 1, T0)
    inside += await start_runs(h, 1, T0 + 86_400 * SECOND - 1)
    await start_runs(h, 1, T0 + 86_400 * SECOND)  # `to` is exclusive
    await h.create("pipe", {"never": "started"})  # queued, no startedUtc: never exported

    lines = lines_of(await api.export())

    assert [json.loads(line)["runId"] for line in lines[:-1]] == inside


async def test_an_empty_window_is_just_a_manifest(api: Api) -> None:
    lines = lines_of(await api.export())

    assert lines == [rebuild_manifest([])]


# -- manifest -----------------------------------------------------------------------------
async def test_manifest_counts_and_hashes_the_lines_before_it(api: Api) -> None:
    await start_runs(api.harness, 3, T0 + SECOND)

    lines = lines_of(await api.export())

    assert len(lines) == 4
    assert lines[-1] == rebuild_manifest(lines[:-1])


async def test_manifest_only_is_the_manifest_of_the_full_export(api: Api) -> None:
    await start_runs(api.harness, 3, T0 + SECOND)
    full = lines_of(await api.export())

    response = await api.export({**WINDOW, "manifest": "1"})

    assert response.status_code == 200
    assert response.json() == json.loads(full[-1])["manifest"]
    assert response.json()["count"] == 3


# -- verification -------------------------------------------------------------------------
async def test_verify_accepts_a_real_export_of_finished_runs(api: Api) -> None:
    h = api.harness
    flaky = {"untilAttempt": 2, "retryable": True}
    retry = {"maxAttempts": 2, "backoff": {"initialMs": 1}}
    spec = h.spec("mixed", [{"id": "f", "plugin": "fail", "with": flaky, "retry": retry}])
    completed = await h.run_to_end(spec)
    failed = await h.run_to_end(h.spec("boom", [{"id": "x", "plugin": "fail"}]))
    started = completed["startedUtc"]

    response = await api.export({"from": started, "to": "2999-01-01T00:00:00Z"})

    report = verify_export(lines_of(response))
    assert report.ok, report
    assert report.count == 2
    assert {completed["status"], failed["status"]} == {"completed", "failed"}


def tamper_event_status(line: bytes) -> bytes:
    run = json.loads(line)
    run["events"][1]["status"] = "succeeded"
    return json.dumps(run, sort_keys=True, separators=(",", ":")).encode() + b"\n"


async def test_verify_finds_an_edited_event_even_with_a_recomputed_manifest(api: Api) -> None:
    await start_runs(api.harness, 3, T0 + SECOND)
    lines = lines_of(await api.export())
    edited = [lines[0], tamper_event_status(lines[1]), lines[2]]

    plain = verify_export([*edited, lines[-1]])
    forged = verify_export([*edited, rebuild_manifest(edited)])

    assert not plain.ok and plain.line == 2
    assert not forged.ok and forged.line == 2
    assert "ledger chain broken at seq 2" in (forged.problem or "")


async def test_verify_finds_a_removed_line(api: Api) -> None:
    await start_runs(api.harness, 3, T0 + SECOND)
    lines = lines_of(await api.export())

    report = verify_export([lines[0], lines[2], lines[3]])

    assert not report.ok
    assert report.problem == "manifest count is 3, recomputed 2"


async def test_verify_finds_a_missing_manifest_and_a_changed_run_status(api: Api) -> None:
    await start_runs(api.harness, 1, T0 + SECOND)
    [line, manifest] = lines_of(await api.export())
    relabelled = json.loads(line)
    relabelled["status"] = "completed"
    changed = json.dumps(relabelled, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    truncated = verify_export([line])
    forged = verify_export([changed, rebuild_manifest([changed])])

    assert truncated.problem == "no manifest line: the export is incomplete"
    assert not forged.ok and "status 'completed' but its ledger says 'running'" in str(
        forged.problem
    )
    assert verify_export([line, manifest]).ok


def edited_line(line: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    run = json.loads(line)
    edit(run)
    return json.dumps(run, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def forge_outputs(run: dict[str, Any]) -> None:
    run["steps"][0]["outputs"] = {"forged": True}


def forge_inputs(run: dict[str, Any]) -> None:
    run["inputs"] = {"n": 99}


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (forge_outputs, "step a outputs do not match their outputsHash"),
        (forge_inputs, "inputs do not match inputsHash"),
    ],
)
async def test_verify_rehashes_outputs_and_inputs_even_with_a_recomputed_manifest(
    api: Api, edit: Callable[[dict[str, Any]], None], said: str
) -> None:
    h = api.harness
    spec = h.spec("out", [{"id": "a", "plugin": "noop", "with": {"outputs": {"rows": 3}}}])
    view = await h.run_to_end(spec, {"n": 1})
    lines = lines_of(await api.export({"from": view["startedUtc"], "to": "2999-01-01T00:00:00Z"}))
    assert verify_export(lines).ok
    changed = edited_line(lines[0], edit)

    report = verify_export([changed, rebuild_manifest([changed])])

    assert not report.ok and said in str(report.problem)


async def test_write_export_writes_what_the_api_serves(api: Api, tmp_path: Path) -> None:
    await start_runs(api.harness, 3, T0 + SECOND)
    served = (await api.export()).content
    out = tmp_path / "ledger.ndjson"
    window = ExportWindow("acme", T0, T0 + 86_400 * SECOND)

    manifest = await write_export(api.harness.orchestrator.env.db, window, out)

    assert out.read_bytes() == served
    assert manifest.count == 3
    assert not (tmp_path / "ledger.ndjson.partial").exists()


# -- access -------------------------------------------------------------------------------
async def test_a_tenant_exports_only_its_own_runs(api: Api) -> None:
    acme = await start_runs(api.harness, 2, T0 + SECOND, tenant="acme")
    globex = await start_runs(api.harness, 1, T0 + SECOND, tenant="globex")

    acme_lines = lines_of(await api.export(tenant="acme"))
    globex_lines = lines_of(await api.export(tenant="globex"))

    assert sorted(json.loads(x)["runId"] for x in acme_lines[:-1]) == sorted(acme)
    assert [json.loads(x)["runId"] for x in globex_lines[:-1]] == globex


async def test_export_needs_the_admin_scope(api: Api) -> None:
    response = await api.export(scopes=["orchestrator:write"])

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "SCOPE_REQUIRED"


@pytest.mark.parametrize(
    "params",
    [
        {"to": WINDOW["to"]},
        {"from": WINDOW["from"]},
        {"from": "yesterday", "to": WINDOW["to"]},
        {"from": WINDOW["to"], "to": WINDOW["from"]},
    ],
)
async def test_a_missing_invalid_or_empty_window_is_rejected(
    api: Api, params: dict[str, str]
) -> None:
    response = await api.export(params)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_FAILED"


# -- memory -------------------------------------------------------------------------------
async def test_a_large_export_is_read_in_chunks_and_never_held_whole(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_runs(api.harness, 2000, T0 + SECOND)
    db = api.harness.orchestrator.env.db
    window = ExportWindow("acme", T0, T0 + 86_400 * SECOND)
    reads: list[int] = []
    read = db.read  # each chunk is one read-only transaction (one snapshot)

    async def counting(work: Callable[..., Any]) -> Any:
        found = await read(work)
        reads.append(len(getattr(found, "runs", ())))
        return found

    monkeypatch.setattr(db, "read", counting)
    size = sum([len(line) async for line in export_lines(db, window)])
    assert reads == [200] * 10 + [0, 0]  # the last read is the (empty) checkpoint page

    monkeypatch.undo()
    tracemalloc.start()
    try:
        async for _ in export_lines(db, window, chunk=50):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 4, f"peak {peak} bytes for {size} bytes of output"
