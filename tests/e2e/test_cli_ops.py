"""The operations commands (`schedule`, `queue`, `quota`, `deadletter`, `audit`, `dag rollback`)
against a real `serve` process, including the runbook's incidents played end to end.

One `serve` runs for the whole module on a temp SQLite store with a temp key directory and a
free port; every test drives it through the CLI in a subprocess, as an operator would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest
from services import free_port

TIMEOUT = 30
TENANT = "default"

DAGS = {
    "hello-v1.yaml": """\
dagId: hello
version: 1
steps:
  - {id: greet, plugin: noop, with: {outputs: {greeting: hi}}}
""",
    "hello-v2.yaml": """\
dagId: hello
version: 2
steps:
  - {id: greet, plugin: noop, with: {outputs: {greeting: hello}}}
""",
    "boom.yaml": """\
dagId: boom
version: 1
steps:
  - {id: prepare, plugin: noop}
  - {id: explode, plugin: fail, with: {code: BOOM, message: it broke}}
edges:
  - {from: prepare, to: explode}
""",
    "slow.yaml": """\
dagId: slow
version: 1
steps:
  - {id: wait-a, plugin: sleep, with: {seconds: 0.3}}
  - {id: wait-b, plugin: sleep, with: {seconds: 0.3}}
edges:
  - {from: wait-a, to: wait-b}
""",
    "runaway.yaml": """\
dagId: runaway
version: 1
steps:
  - {id: tick, plugin: sleep, with: {seconds: 0.2}}
""",
}


@dataclass
class Service:
    """The running `serve` process and the environment of its clients."""

    proc: subprocess.Popen[str]
    env: dict[str, str]
    workdir: Path
    stderr: list[str]


def argv(*args: str) -> list[str]:
    """The command line of `stella orch ARGS`, run with this interpreter."""
    return [sys.executable, "-m", "stellaorch.cli.main", "orch", *args]


def stella(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `stella orch ARGS` to completion."""
    return subprocess.run(argv(*args), env=env, capture_output=True, text=True, timeout=TIMEOUT)


def ok_json(*args: str, env: dict[str, str]) -> Any:
    """Run a command with `-o json`; it must exit 0; its stdout parsed."""
    done = stella(*args, "-o", "json", env=env)
    assert done.returncode == 0, (args, done.stderr)
    return json.loads(done.stdout)


def assert_one_error_line(done: subprocess.CompletedProcess[str], code: str) -> None:
    """Exactly one `error: CODE: …` line on stderr, and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {code}: "), done.stderr


def _drain_pipe(pipe: IO[str] | None, sink: list[str]) -> None:
    assert pipe is not None
    for line in pipe:
        sink.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`stella orch serve` with the DAGs above, and an admin token for tenant `default`."""
    workdir = tmp_path_factory.mktemp("serve-ops")
    dags = workdir / "dags"
    dags.mkdir()
    for name, text in DAGS.items():
        (dags / name).write_text(text)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STELLA_")},
        "STELLA_ORCH_KEYS_DIR": str(workdir / "keys"),
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{workdir}/orchestrator.db",
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05",
        "STELLA_ORCH_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
        "STELLA_ORCH_ALERT_POLL_SECONDS": "0.2",
    }
    proc = subprocess.Popen(
        argv("serve", "--dags", str(dags), "--port", str(port)),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []
    for pipe, sink in ((proc.stdout, out), (proc.stderr, err)):
        threading.Thread(target=_drain_pipe, args=(pipe, sink), daemon=True).start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(line.startswith("ready: ") for line in out):
            assert proc.poll() is None, "\n".join(err[-20:])
            assert time.monotonic() < deadline, f"serve not ready: {out} {err[-20:]}"
            time.sleep(0.05)
        issued = stella(
            "token", "issue", "--tenant", TENANT, "--scope", "orchestrator:admin", env=env
        )
        assert issued.returncode == 0, issued.stderr
        client_env = {
            **env,
            "STELLA_API_URL": f"http://127.0.0.1:{port}",
            "STELLA_TOKEN": issued.stdout.strip(),
            "STELLA_TENANT": TENANT,
        }
        yield Service(proc, client_env, workdir, err)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0, "\n".join(err[-20:])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def start_run(service: Service, dag_id: str, *extra: str) -> dict[str, Any]:
    """`run start` (no wait); the new run."""
    run: dict[str, Any] = ok_json("run", "start", "--dag-id", dag_id, *extra, env=service.env)
    return run


def wait_run(service: Service, run_id: str, timeout: float = 15) -> dict[str, Any]:
    """Poll `run show` until the run has ended; the final run."""
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = ok_json("run", "show", "--run-id", run_id, env=service.env)
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.2)


def queue_row(service: Service) -> dict[str, Any]:
    """The tenant's row of `queue list` (an empty one if the tenant is not listed)."""
    document = ok_json("queue", "list", env=service.env)
    rows = document["items"] if isinstance(document, dict) else document
    for row in rows:
        if row["tenant"] == TENANT:
            return dict(row)
    return {"tenant": TENANT, "depth": 0, "inFlight": 0}


def resume_queue(service: Service) -> None:
    """Leave the queue leasing again for the tests that follow."""
    done = stella("queue", "resume", "--reason", "test cleanup", env=service.env)
    assert done.returncode == 0, done.stderr


# --- schedules --------------------------------------------------------------------------------
YEARLY = "0 0 1 1 *"  # never fires during a test


def test_schedule_create_list_pause_resume_clear_delete(service: Service) -> None:
    env = service.env
    created = ok_json(
        "schedule", "create", "--dag-id", "hello", "--version", "1", "--cron", YEARLY,
        "--timezone", "Europe/Sofia", "--overlap", "buffer_one", "--catchup", "none",
        "--catchup-window", "600", "--jitter", "5", "--reason", "nightly hello", env=env,
    )  # fmt: skip
    schedule_id = created["scheduleId"]
    assert created["status"] == "active"
    assert (created["timezone"], created["overlap"], created["catchup"]) == (
        "Europe/Sofia",
        "buffer_one",
        "none",
    )
    assert (created["catchupWindowSeconds"], created["jitterSeconds"]) == (600, 5)

    listed = stella("schedule", "list", "--dag-id", "hello", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split() == [
        "SCHEDULE_ID", "DAG_ID", "VERSION", "STATUS", "NEXT_FIRE", "LAST_FIRE",
        "OVERLAP", "CATCHUP", "TIMEZONE", "CRON",
    ]  # fmt: skip
    assert any(row.split()[:4] == [schedule_id, "hello", "1", "active"] for row in rows)
    assert any(row.endswith(YEARLY) for row in rows)

    steps = [("pause", "paused"), ("resume", "active"), ("clear", "active")]
    for action, status in steps:
        changed = ok_json(
            "schedule", action, "--id", schedule_id, "--reason", f"test {action}", env=env
        )
        assert changed["status"] == status, action
    shown = ok_json("schedule", "show", "--id", schedule_id, env=env)
    assert shown["scheduleId"] == schedule_id
    assert isinstance(shown["recentFirings"], list)

    deleted = ok_json("schedule", "delete", "--id", schedule_id, "--reason", "test delete", env=env)
    assert deleted["status"] == "deleted"
    remaining = ok_json("schedule", "list", env=env)["items"]
    assert schedule_id not in [s["scheduleId"] for s in remaining]
    gone = stella("schedule", "show", "--id", schedule_id, env=env)
    assert gone.returncode == 4
    assert_one_error_line(gone, "SCHEDULE_NOT_FOUND")


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["--cron", "not a cron"], "CRON_INVALID"),
        (["--cron", "61 * * * *"], "CRON_INVALID"),
        (["--cron", YEARLY, "--timezone", "Mars/Olympus"], "TIMEZONE_INVALID"),
    ],
)
def test_schedule_create_with_bad_cron_or_zone_exits_2(
    service: Service, flags: list[str], code: str
) -> None:
    done = stella(
        "schedule", "create", "--dag-id", "hello", *flags, "--reason", "bad", env=service.env
    )
    assert done.returncode == 2
    assert_one_error_line(done, code)
    assert ok_json("schedule", "list", "--dag-id", "hello", env=service.env)["items"] == []


def test_schedule_create_without_reason_is_a_usage_error(service: Service) -> None:
    done = stella("schedule", "create", "--dag-id", "hello", "--cron", YEARLY, env=service.env)
    assert done.returncode == 2
    assert "--reason" in done.stderr


# --- queues -----------------------------------------------------------------------------------
def test_queue_list_prints_fixed_columns(service: Service) -> None:
    done = stella("queue", "list", env=service.env)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert header.split() == [
        "TENANT", "DEPTH", "OLDEST_AGE_S", "IN_FLIGHT", "RETRYING", "PAUSED", "DRAINING",
        "WORKERS", "QUOTA_LIMITED", "NEXT_ELIGIBLE",
    ]  # fmt: skip


def test_queue_pause_holds_new_work_until_resume(service: Service) -> None:
    paused = ok_json("queue", "pause", "--reason", "hold for maintenance", env=service.env)
    try:
        assert paused["paused"] is True
        run = start_run(service, "hello", "--version", "1")
        time.sleep(0.5)  # many worker polls: nothing may be leased
        assert ok_json("run", "show", "--run-id", run["runId"], env=service.env)["status"] == (
            "queued"
        )
        row = queue_row(service)
        assert row["paused"] is True
        assert row["depth"] >= 1
    finally:
        resumed = ok_json("queue", "resume", "--reason", "maintenance over", env=service.env)
    assert resumed["paused"] is False
    assert wait_run(service, run["runId"])["status"] == "completed"


def test_queue_drain_wait_exits_0_once_empty(service: Service) -> None:
    runs = [start_run(service, "slow") for _ in range(3)]
    try:
        done = stella(
            "queue", "drain", "--wait", "--reason", "drain backlog", "-o", "json", env=service.env
        )
        assert done.returncode == 0, done.stderr
        final = json.loads(done.stdout)
        assert final["depth"] == 0
        assert final.get("inFlight", 0) == 0
        for run in runs:
            shown = ok_json("run", "show", "--run-id", run["runId"], env=service.env)
            assert shown["status"] == "completed"
    finally:
        resume_queue(service)


# --- quotas -----------------------------------------------------------------------------------
def test_quota_set_and_show(service: Service) -> None:
    env = service.env
    ok_json("quota", "set", "--max-active", "50", "--burst", "20", "--reason", "cap", env=env)
    shown = ok_json("quota", "show", env=env)
    quotas = shown["items"] if isinstance(shown, dict) and "items" in shown else [shown]
    assert any(q.get("maxActive") == 50 and q.get("burst") == 20 for q in quotas), shown
    negative = stella("quota", "set", "--max-active", "-1", "--reason", "bad", env=env)
    assert negative.returncode == 2
    nothing = stella("quota", "set", "--reason", "nothing to set", env=env)
    assert nothing.returncode == 2
    assert_one_error_line(nothing, "USAGE_INVALID")


# --- DAG rollback -----------------------------------------------------------------------------
def test_dag_rollback_makes_the_old_version_latest(service: Service) -> None:
    env = service.env
    done = stella(
        "dag", "rollback", "--dag-id", "hello", "--to", "1",
        "--reason", "regression in v2", "--ticket", "INC-77", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    versions = {
        d["version"]: d["enabled"]
        for d in ok_json("dag", "list", "--dag-id", "hello", env=env)["items"]
    }
    assert versions == {"2": False, "1": True} or versions == {2: False, 1: True}
    run = start_run(service, "hello")
    assert str(run["dagVersion"]) == "1"
    missing = stella("dag", "rollback", "--dag-id", "nope", "--to", "1", "--reason", "x", env=env)
    assert missing.returncode == 4


# --- dead letter ------------------------------------------------------------------------------
def test_deadletter_lists_a_failing_run_by_error_code_and_replays_it(service: Service) -> None:
    env = service.env
    failed = stella("run", "start", "--dag-id", "boom", "--wait", "-o", "json", env=env)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["runId"]

    table = stella("deadletter", "list", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "CODE", "COUNT", "FIRST_SEEN", "LAST_SEEN", "DAG_VERSIONS", "PLUGINS", "SAMPLE_RUN_IDS",
        "ACKED_UNTIL",
    ]  # fmt: skip
    groups = {g["code"]: g for g in ok_json("deadletter", "list", env=env)["items"]}
    assert groups["BOOM"]["count"] >= 1
    assert run_id in groups["BOOM"]["sampleRunIds"]

    no_reason = stella("deadletter", "replay", "--code", "BOOM", env=env)
    assert no_reason.returncode == 2
    replayed = stella("deadletter", "replay", "--code", "BOOM", "--reason", "after fix", env=env)
    assert replayed.returncode == 0, replayed.stderr


ETL = """\
dagId: etl
version: {v}
steps:
  - {{id: extract, plugin: noop, with: {{outputs: {{rows: 3}}}}}}
  - {{id: load, plugin: {load}}}
edges:
  - {{from: extract, to: load}}
"""


def test_rollback_then_resumed_deadletter_replay_completes(service: Service) -> None:
    """The operator guide's repeated-failures lines: roll back, dry run, replay resumed, ack."""
    env = service.env
    for v, load in ((1, "noop"), (2, "fail, with: {code: LOADER_SCHEMA_MISMATCH}")):
        path = service.workdir / f"etl-v{v}.yaml"
        path.write_text(ETL.format(v=v, load=load))
        ok_json("dag", "publish", "--file", str(path), "--reason", "release", env=env)
    failed = [start_run(service, "etl")["runId"] for _ in range(3)]
    assert {wait_run(service, r)["status"] for r in failed} == {"failed"}
    note = ("--reason", "after rollback")
    ok_json("dag", "rollback", "--dag-id", "etl", "--to", "1", *note, env=env)
    scope = ("--code", "LOADER_SCHEMA_MISMATCH", "--dag-id", "etl")
    plan = stella("deadletter", "replay", *scope, *note, "--resume", "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0].split() == ["REPLAY_OF", "DAG_ID", "VERSION", "RESUME"]
    assert len(plan.stdout.splitlines()) == 4 and "dry run" in plan.stderr
    replayed = ok_json("deadletter", "replay", *scope, *note, "--resume", env=env)["items"]
    assert sorted(r["replayOf"] for r in replayed) == sorted(failed)
    for run in replayed:
        done = wait_run(service, run["runId"])
        assert (done["status"], done["dagVersion"]) == ("completed", "1")
        steps = {s["stepId"]: s for s in done["steps"]}
        assert steps["extract"]["status"] == "succeeded"
    one = ("--run-id", failed[0], "--resume", "--version", "1", "--wait")
    again = ok_json("run", "replay", *one, "--reason", "once more", env=env)
    assert (again["status"], again["replayOf"], again["dagVersion"]) == (
        "completed",
        failed[0],
        "1",
    )
    acked = stella("deadletter", "ack", "--code", "LOADER_SCHEMA_MISMATCH", *note, env=env)
    assert acked.returncode == 0, acked.stderr
    codes = {g["code"] for g in ok_json("deadletter", "list", env=env)["items"]}
    assert "LOADER_SCHEMA_MISMATCH" not in codes


def test_bulk_cancel_dry_run_then_cancel_and_pause_all(service: Service) -> None:
    """The operator guide's bulk lines: look with --dry-run, cancel, pause every schedule."""
    env = service.env
    ok_json("queue", "pause", "--reason", "hold the runs", env=env)
    try:
        ids = [start_run(service, "slow")["runId"] for _ in range(3)]
        scope = ("--dag-id", "slow", "--status", "queued", "--reason", "bulk test")
        plan = stella("run", "bulk-cancel", *scope, "--dry-run", env=env)
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.split() == ["RUN_ID", *ids] and "dry run" in plan.stderr
        done = ok_json("run", "bulk-cancel", *scope, env=env)
        assert [i["runId"] for i in done["items"]] == ids
        assert {wait_run(service, r)["status"] for r in ids} == {"cancelled"}
    finally:
        resume_queue(service)
    sid = ok_json(
        "schedule", "create", "--dag-id", "hello", "--cron", YEARLY, "--reason", "x", env=env
    )["scheduleId"]
    paused = ok_json("schedule", "pause-all", "--reason", "freeze", env=env)["items"]
    assert sid in [p["scheduleId"] for p in paused]
    shown = ok_json("schedule", "show", "--id", sid, env=env)
    assert shown["status"] == "paused"
    ok_json("schedule", "delete", "--id", sid, "--reason", "cleanup", env=env)


def test_run_events_prints_the_ledger_and_follows_a_run_to_its_end(service: Service) -> None:
    env = service.env
    run_id = start_run(service, "slow")["runId"]
    followed = stella("run", "events", "--run-id", run_id, "--follow", "-o", "ndjson", env=env)
    assert followed.returncode == 0, followed.stderr
    entries = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["type"] == "run.created" and entries[-1]["type"] == "run.completed"
    table = stella("run", "events", "--run-id", run_id, env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "TYPE", "STATUS", "STEP_ID", "ATTEMPT"]
    assert len(lines) == len(entries) + 1
    missing = stella("run", "events", "--run-id", "nope", env=env)
    assert missing.returncode == 4


def test_a_list_piped_into_a_reader_that_stops_ends_quietly(service: Service) -> None:
    """`stella orch run list | head -1`: no `Broken pipe`, exit 0."""
    proc = subprocess.Popen(
        argv("run", "list", "--all"),
        env=service.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read()
    assert proc.wait(timeout=TIMEOUT) == 0, err
    assert err == ""


def test_drain_wait_on_a_paused_queue_says_why_it_waits(service: Service) -> None:
    env = service.env
    ok_json("queue", "pause", "--reason", "hold", env=env)
    run_id = start_run(service, "hello")["runId"]
    proc = subprocess.Popen(
        argv("queue", "drain", "--wait", "--reason", "drain test"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "is paused" in line and "queue resume" in line, line
    finally:
        resume_queue(service)
        proc.wait(timeout=TIMEOUT)
    assert wait_run(service, run_id)["status"] == "completed"


# --- audit ------------------------------------------------------------------------------------
def test_audit_list_shows_admin_actions_with_reasons(service: Service) -> None:
    env = service.env
    created = ok_json(
        "schedule", "create", "--dag-id", "hello", "--cron", YEARLY,
        "--reason", "audit me: create", "--ticket", "CHG-1", env=env,
    )  # fmt: skip
    sid = created["scheduleId"]
    ok_json("schedule", "pause", "--id", sid, "--reason", "audit me: pause", env=env)
    ok_json("schedule", "delete", "--id", sid, "--reason", "audit me: delete", env=env)

    entries = ok_json("audit", "list", "--all", env=env)["items"]
    mine = {e["action"]: e for e in entries if str(e.get("reason", "")).startswith("audit me")}
    assert set(mine) >= {"schedule.create", "schedule.pause", "schedule.delete"}
    assert mine["schedule.create"]["ticket"] == "CHG-1"
    assert mine["schedule.pause"]["target"] == f"schedule:{sid}"

    filtered = ok_json("audit", "list", "--action", "schedule.pause", "--all", env=env)["items"]
    assert filtered
    assert {e["action"] for e in filtered} == {"schedule.pause"}

    table = stella("audit", "list", "--all", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "TIME", "TENANT", "ACTOR", "ACTION", "TARGET", "TICKET", "REASON",
    ]  # fmt: skip

    out = service.workdir / "audit.ndjson"
    exported = ok_json("audit", "export", "--out", str(out), env=env)
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert exported["count"] == len(out.read_text().splitlines())
    assert any(line.get("reason") == "audit me: pause" for line in lines)
    assert not out.with_name(out.name + ".partial").exists()


# --- runbook incidents ------------------------------------------------------------------------
def test_incident_scheduler_runaway(service: Service) -> None:
    """Disable the offending version, clear its triggers, confirm the queue drains."""
    env = service.env
    runaway = ok_json(
        "schedule", "create", "--dag-id", "runaway", "--version", "1", "--cron", "* * * * * *",
        "--overlap", "allow", "--reason", "every second (oops)", env=env,
    )  # fmt: skip
    sid = runaway["scheduleId"]
    deadline = time.monotonic() + 10
    while not ok_json("run", "list", "--dag-id", "runaway", env=env)["items"]:
        assert time.monotonic() < deadline, "the runaway schedule never fired"
        time.sleep(0.3)

    reason = ("--reason", "runaway schedule", "--ticket", "INC-78")
    disabled = ok_json("dag", "disable", "--dag-id", "runaway", "--version", "1", *reason, env=env)
    assert disabled["enabled"] is False
    cleared = ok_json("schedule", "clear", "--id", sid, *reason, env=env)
    assert "cleared" in cleared
    try:
        drained = stella("queue", "drain", "--wait", *reason, "-o", "json", env=env)
        assert drained.returncode == 0, drained.stderr
        assert json.loads(drained.stdout)["depth"] == 0
    finally:
        resume_queue(service)
    ok_json("schedule", "delete", "--id", sid, "--reason", "incident closed", env=env)


def test_incident_repeated_failures(service: Service) -> None:
    """Find error.code in the dead-letter view; compare versions; roll back (boom has one)."""
    env = service.env
    stella("run", "start", "--dag-id", "boom", "--wait", env=env)
    groups = {g["code"]: g for g in ok_json("deadletter", "list", env=env)["items"]}
    assert "BOOM" in groups
    assert groups["BOOM"]["dagVersions"]
    assert groups["BOOM"]["plugins"]


# --- backfill and alerts ------------------------------------------------------------------------
def test_schedule_backfill_dry_run_then_create_then_repeat(service: Service) -> None:
    env = service.env
    created = ok_json(
        "schedule", "create", "--dag-id", "hello", "--cron", YEARLY, "--reason", "backfill", env=env
    )
    window = ("--id", created["scheduleId"], "--from", "2024-06-01T00:00:00Z")
    window += ("--to", "2026-06-01T00:00:00Z", "--reason", "missed runs")

    dry = ok_json("schedule", "backfill", *window, "--dry-run", env=env)
    made = ok_json("schedule", "backfill", *window, env=env)
    again = ok_json("schedule", "backfill", *window, env=env)
    delete = ("schedule", "delete", "--id", created["scheduleId"], "--reason", "done")
    assert stella(*delete, env=env).returncode == 0

    assert (dry["wouldCreate"], made["created"], again["created"], again["existing"]) == (
        2,
        2,
        0,
        2,
    )
    assert [i["scheduledUtc"][:10] for i in made["items"]] == ["2025-01-01", "2026-01-01"]
    run = ok_json("run", "show", "--run-id", made["items"][0]["runId"], env=env)
    assert run["trigger"] == f"backfill:{created['scheduleId']}"


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_alert_set_delivers_a_signed_webhook_for_a_failed_run(service: Service) -> None:
    env = service.env
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    key = service.workdir / "hook.key"
    key.write_text("e2e-hook-key\n")
    put = ("secret", "put", "hook-key", "--from-file", str(key), "--reason", "alerts")
    assert stella(*put, env=env).returncode == 0
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    try:
        rule = ok_json(
            "alert", "set", "--kind", "run.failed", "--url", url, "--dag-id", "boom",
            "--secret", "hook-key", "--reason", "page on-call", env=env,
        )  # fmt: skip
        run = wait_run(service, start_run(service, "boom")["runId"])
        deadline = time.monotonic() + TIMEOUT
        while not _delivered(service, rule["ruleId"]):
            assert time.monotonic() < deadline, "no delivery recorded"
            time.sleep(0.2)
        log = ok_json("alert", "deliveries", "--id", rule["ruleId"], env=env)
        delete = ("alert", "delete", "--id", rule["ruleId"], "--reason", "done")
        assert stella(*delete, env=env).returncode == 0
    finally:
        hook.shutdown()
        hook.server_close()
    headers, body = _Hook.received[0]
    signed = hmac.new(b"e2e-hook-key", body, hashlib.sha256).hexdigest()
    assert headers["X-Stella-Signature"] == f"sha256={signed}"
    assert json.loads(body)["runId"] == run["runId"]
    assert log["items"][0]["status"] == "delivered"
    assert rule["ruleId"] == "run-failed-boom"


def _delivered(service: Service, rule_id: str) -> bool:
    """True once `alert list` shows the rule's newest delivery as delivered."""
    rules = ok_json("alert", "list", env=service.env)["items"]
    last = next(r["lastDelivery"] for r in rules if r["ruleId"] == rule_id)
    return last is not None and last["status"] == "delivered"


# --- SLOs ---------------------------------------------------------------------------------------
def test_slo_status_and_set_exit_1_only_while_a_budget_burns_critically(service: Service) -> None:
    env = service.env
    stella("run", "start", "--dag-id", "boom", "--wait", env=env)  # one failure at least
    lenient = ok_json(
        "slo", "set", "run-failure-rate", "--objective", "0.5", "--reason", "pilot", env=env
    )
    assert (lenient["id"], lenient["objective"]) == ("run-failure-rate", 0.5)
    table = stella("slo", "status", env=env)
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.split()[:4] == ["SLO", "STATUS", "OBJECTIVE", "THRESHOLD"]
    assert "run-failure-rate" in table.stdout

    strict = stella(
        "slo", "set", "run-failure-rate", "--objective", "0.99999", "--reason", "strict", env=env
    )
    assert strict.returncode == 0, strict.stderr
    burning = stella("slo", "status", "-o", "json", env=env)
    assert burning.returncode == 1, burning.stderr
    items = {s["id"]: s for s in json.loads(burning.stdout)["items"]}
    assert items["run-failure-rate"]["status"] == "critical"

    unknown = stella("slo", "set", "uptime", "--objective", "0.9", "--reason", "x", env=env)
    assert unknown.returncode == 2
    assert_one_error_line(unknown, "VALIDATION_FAILED")
    too_high = stella("slo", "set", "backlog", "--objective", "2", "--reason", "x", env=env)
    assert too_high.returncode == 2, too_high.stderr
    ok_json("slo", "set", "run-failure-rate", "--objective", "0.5", "--reason", "reset", env=env)
