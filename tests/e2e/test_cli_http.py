"""The `stella orch` client commands against a real `serve` process over HTTP and WebSocket.

One `serve` (API + worker + scheduler) runs for the whole module on a temp SQLite store with
a temp key directory; every test drives it through the CLI as a user would, in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from services import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_IDS = ["flaky-import", "long-chain", "nightly-feed-refresh"]
TIMEOUT = 30
TENANT = "default"

FAILING_DAG = """\
dagId: boom
version: 1
steps:
  - {id: prepare, plugin: noop}
  - {id: explode, plugin: fail, with: {code: BOOM, message: it broke}}
edges:
  - {from: prepare, to: explode}
"""

NEW_DAG = """\
dagId: hello
version: 1
steps:
  - {id: greet, plugin: noop, with: {outputs: {greeting: hi}}}
"""

INLINE_DAG = """\
dagId: inline
version: 1
steps:
  - {id: sh, plugin: script, with: {command: "echo hi"}}
"""


class LineReader:
    """Reads a pipe on a thread, so a test can wait for lines with a timeout."""

    def __init__(self, pipe: IO[str] | None) -> None:
        assert pipe is not None, "the process was started without a pipe"
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        for raw in pipe:
            line = raw.rstrip("\n")
            self.seen.append(line)  # everything read so far, whether taken or not
            self._lines.put(line)
        self._lines.put(None)  # end of output

    def next(self, timeout: float) -> str | None:
        """The next line, or None at the end of output or after `timeout` seconds."""
        try:
            return self._lines.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None

    def until(self, wanted: str, timeout: float) -> list[str]:
        """Lines up to and including the first that contains `wanted`."""
        taken: list[str] = []
        deadline = time.monotonic() + timeout
        while (line := self.next(deadline - time.monotonic())) is not None:
            taken.append(line)
            if wanted in line:
                return taken
        raise AssertionError(f"no line with {wanted!r} within {timeout}s; got {self.seen}")


@dataclass
class Service:
    """The running `serve` process and how to reach it."""

    proc: subprocess.Popen[str]
    out: LineReader
    err: LineReader
    env: dict[str, str]
    startup: list[str]
    token: str
    workdir: Path


def base_env() -> dict[str, str]:
    """The environment without any STELLA_* setting, so the host cannot leak into a test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STELLA_")}


def argv(*args: str) -> list[str]:
    """The command line of `stella orch ARGS`, run with this interpreter."""
    return [sys.executable, "-m", "stellaorch.cli.main", "orch", *args]


def stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> int:
    """Signal a process and reap it (killing it if it does not stop in time)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`stella orch serve` on a copy of the examples (plus a failing DAG), ready for clients."""
    workdir = tmp_path_factory.mktemp("serve")
    dags = workdir / "dags"
    shutil.copytree(EXAMPLES, dags)
    (dags / "boom.yaml").write_text(FAILING_DAG)
    port = free_port()
    env = {
        **base_env(),
        "STELLA_ORCH_KEYS_DIR": str(workdir / "keys"),
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{workdir}/orchestrator.db",
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05",
    }
    proc = subprocess.Popen(
        argv("serve", "--dags", str(dags), "--port", str(port)),
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = LineReader(proc.stdout), LineReader(proc.stderr)
        startup = out.until("ready: ", timeout=TIMEOUT)
        issued = stella(
            "token", "issue", "--tenant", TENANT, "--scope", "orchestrator:admin", env=env
        )
        assert issued.returncode == 0, issued.stderr
        client_env = {
            **env,
            "STELLA_API_URL": f"http://127.0.0.1:{port}",
            "STELLA_TOKEN": issued.stdout.strip(),
        }
        yield Service(proc, out, err, client_env, startup, issued.stdout, workdir)
        assert stop(proc) == 0, "\n".join(err.seen[-20:])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stella(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `stella orch ARGS` to completion."""
    return subprocess.run(argv(*args), env=env, capture_output=True, text=True, timeout=TIMEOUT)


def assert_one_error_line(done: subprocess.CompletedProcess[str], code: str) -> None:
    """Exactly one readable `error: CODE: …` line on stderr, and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {code}: "), done.stderr


def start_run(service: Service, dag_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`run start` of a DAG with its sample inputs, printing JSON."""
    inputs = service.workdir / "dags" / "inputs" / f"{dag_id}.json"
    given = ["--inputs", str(inputs)] if inputs.exists() else []
    return stella("run", "start", "--dag-id", dag_id, *given, *extra, "-o", "json", env=service.env)


@pytest.fixture(scope="module")
def finished_run(service: Service) -> dict[str, Any]:
    """A run of flaky-import that `run start --wait` followed to completion."""
    done = start_run(service, "flaky-import", "--wait")
    assert done.returncode == 0, done.stderr
    run: dict[str, Any] = json.loads(done.stdout)
    return run


def test_first_start_generates_a_key_and_says_how_to_get_a_token(service: Service) -> None:
    assert any(line.startswith("generated signing key ed25519-") for line in service.startup)
    # `serve` was started as `python -m stellaorch.cli.main` with no `stella` on PATH (or the
    # one there): the hint names a command that exists here.
    hint = next(line for line in service.startup if "orch token issue" in line)
    launcher = hint.removeprefix("get a token: ").split(" orch token issue")[0]
    assert launcher in ("stella", f"{sys.executable} -m stellaorch.cli.main"), hint
    assert "API on http://127.0.0.1:" in service.startup[-1]


def test_token_issue_prints_only_the_token(service: Service) -> None:
    lines = service.token.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].count(".") == 2  # header.claims.signature


def test_dag_list_prints_a_table_with_fixed_columns(service: Service) -> None:
    done = stella("dag", "list", env=service.env)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    columns = ["DAG_ID", "VERSION", "ENABLED", "SPEC_HASH", "CREATED", "SIGNED_BY"]
    assert header.split() == columns
    ids = [row.split()[0] for row in rows]
    assert ids == sorted(["boom", *EXAMPLE_IDS])


def test_dag_list_json_is_the_api_document(service: Service) -> None:
    done = stella("dag", "list", "--output", "json", env=service.env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["nextPageToken"] is None
    assert {item["dagId"] for item in document["items"]} >= set(EXAMPLE_IDS)
    assert all(item["specHash"].startswith("sha256:") for item in document["items"])


def test_run_start_wait_exits_0_once_the_run_completed(finished_run: dict[str, Any]) -> None:
    assert finished_run["status"] == "completed"
    assert [s["status"] for s in finished_run["steps"]] == ["succeeded"] * 3


def test_run_start_wait_of_a_failing_dag_exits_1(service: Service) -> None:
    done = start_run(service, "boom", "--wait")
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "failed"
    assert_one_error_line(done, "RUN_FAILED")
    assert "explode: BOOM" in done.stderr


def test_run_show_prints_the_run_and_its_steps(
    service: Service, finished_run: dict[str, Any]
) -> None:
    done = stella("run", "show", "--run-id", finished_run["runId"], env=service.env)
    assert done.returncode == 0, done.stderr
    run_table, step_table = done.stdout.strip().split("\n\n")
    assert run_table.splitlines()[0].split()[:4] == ["RUN_ID", "DAG_ID", "VERSION", "STATUS"]
    assert run_table.splitlines()[1].split()[:4] == [
        finished_run["runId"],
        "flaky-import",
        "1",
        "completed",
    ]
    steps = [line.split()[0] for line in step_table.splitlines()[1:]]
    assert steps == ["import-batch", "index-batch", "report"]


def test_run_list_ndjson_prints_one_run_per_line(
    service: Service, finished_run: dict[str, Any]
) -> None:
    done = stella("run", "list", "--output", "ndjson", env=service.env)
    assert done.returncode == 0, done.stderr
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert finished_run["runId"] in {run["runId"] for run in runs}
    assert all(run["tenant"] == TENANT for run in runs)


def test_cancel_of_a_finished_run_exits_6(service: Service, finished_run: dict[str, Any]) -> None:
    done = stella("run", "cancel", "--run-id", finished_run["runId"], "-o", "json", env=service.env)
    assert done.returncode == 6
    run = json.loads(done.stdout)
    assert run["cancelRejected"] is True
    assert run["status"] == "completed"
    assert_one_error_line(done, "CANCEL_REJECTED")


def test_bad_token_exits_3(service: Service) -> None:
    done = stella("run", "list", "--token", "not-a-jwt", env=service.env)
    assert done.returncode == 3
    assert_one_error_line(done, "UNAUTHENTICATED")


def test_unknown_run_exits_4(service: Service) -> None:
    done = stella("run", "show", "--run-id", "no-such-run", env=service.env)
    assert done.returncode == 4
    assert_one_error_line(done, "RUN_NOT_FOUND")


def test_verbose_error_names_the_trace_id(service: Service) -> None:
    done = stella("-v", "run", "show", "--run-id", "no-such-run", env=service.env)
    assert done.returncode == 4
    assert "(traceId " in done.stderr


def test_invalid_inputs_file_exits_2(service: Service, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text("[1, 2]")
    args = ["run", "start", "--dag-id", "flaky-import", "--inputs", str(inputs)]
    done = stella(*args, env=service.env)
    assert done.returncode == 2
    assert_one_error_line(done, "INPUTS_INVALID")


def test_unreachable_api_exits_10(service: Service) -> None:
    env = {**service.env, "STELLA_API_URL": f"http://127.0.0.1:{free_port()}"}
    done = stella("run", "list", env=env)
    assert done.returncode == 10
    assert_one_error_line(done, "API_UNREACHABLE")


def test_dag_publish_then_disable_records_the_reason(service: Service, tmp_path: Path) -> None:
    spec = tmp_path / "hello.yaml"
    spec.write_text(NEW_DAG)
    reason = ["--reason", "e2e test", "--ticket", "CHG-1", "-o", "json"]
    published = stella("dag", "publish", "--file", str(spec), *reason, env=service.env)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["enabled"] is True
    version = ["--dag-id", "hello", "--version", "1"]
    disabled = stella("dag", "disable", *version, *reason, env=service.env)
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout)["enabled"] is False


def test_run_stream_prints_the_events_of_a_run_started_meanwhile(service: Service) -> None:
    accepted_before = _stream_accepts(service)
    follower = subprocess.Popen(
        argv("run", "stream", "--dag-id", "long-chain"),
        env=service.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = LineReader(follower.stdout)
        _wait_until(lambda: _stream_accepts(service) > accepted_before, "stream subscribed")
        started = start_run(service, "long-chain")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["runId"]
        events = _events_until_run_ends(lines, run_id)
    finally:
        stop(follower)
    assert events[0]["type"] == "run.updated"
    assert events[-1]["type"] == "run.completed"
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    for event in events:
        assert {"seq", "type", "tenant", "dagId", "runId", "status", "timestamp", "traceId"} <= set(
            event
        )


def _stream_accepts(service: Service) -> int:
    """How many stream subscriptions the server has accepted (from its access log)."""
    return sum("runs/stream" in line and "accepted" in line for line in service.err.seen)


def _wait_until(probe: Any, what: str) -> None:
    """Poll `probe()` until it holds."""
    deadline = time.monotonic() + TIMEOUT
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _events_until_run_ends(lines: LineReader, run_id: str) -> list[dict[str, Any]]:
    """The run's events as printed by `run stream`, up to its run.completed."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + TIMEOUT
    while (line := lines.next(deadline - time.monotonic())) is not None:
        event = json.loads(line)  # every stdout line is one JSON message
        if event["runId"] == run_id:
            events.append(event)
        if event["runId"] == run_id and event["type"] == "run.completed":
            return events
    raise AssertionError(f"run {run_id} did not complete on the stream: {lines.seen}")


def test_ledger_export_verifies_and_a_tampered_copy_does_not(
    service: Service, finished_run: dict[str, Any], tmp_path: Path
) -> None:
    exported = tmp_path / "ledger.ndjson"
    window = ["--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z"]
    done = stella(
        "ledger", "export", *window, "--out", str(exported), "-o", "json", env=service.env
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["count"] >= 1
    assert manifest["rootHash"].startswith("sha256:")
    assert finished_run["runId"] in exported.read_text()
    assert not list(tmp_path.glob("*.partial"))

    verified = stella("ledger", "verify", str(exported), "-o", "json", env=service.env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    tampered = tmp_path / "tampered.ndjson"
    tampered.write_text(exported.read_text().replace('"succeeded"', '"failed"', 1))
    broken = stella("ledger", "verify", str(tampered), env=service.env)
    assert broken.returncode == 1
    assert_one_error_line(broken, "LEDGER_BROKEN")
    assert "line 1" in broken.stderr


def test_ledger_checkpoint_signs_and_verify_checks_it_against_the_trust_store(
    service: Service, finished_run: dict[str, Any], tmp_path: Path
) -> None:
    signed = stella("ledger", "checkpoint", "--reason", "e2e audit", "-o", "json", env=service.env)
    assert signed.returncode == 0, signed.stderr
    checkpoint = json.loads(signed.stdout)
    assert checkpoint["checkpoint"]["tenant"] == "default"
    assert checkpoint["checkpointHash"].startswith("sha256:")
    exported = tmp_path / "anchored.ndjson"
    window = ["--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z"]
    done = stella(
        "ledger", "export", *window, "--out", str(exported), "-o", "json", env=service.env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["checkpoints"] >= 1

    verified = stella("ledger", "verify", str(exported), "-o", "json", env=service.env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["checkpoints"] >= 1
    untrusted = stella(
        "ledger", "verify", str(exported), "--trust-dir", str(tmp_path / "empty"), env=service.env
    )
    assert untrusted.returncode == 1
    assert_one_error_line(untrusted, "LEDGER_BROKEN")
    assert "checkpoint" in untrusted.stderr and finished_run["runId"]


KIT_WINDOW = ["--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z"]


def test_export_writes_the_same_kit_twice_and_verify_checks_it_offline(
    service: Service, finished_run: dict[str, Any], tmp_path: Path
) -> None:
    first, second, unpacked = tmp_path / "a.tgz", tmp_path / "b.tgz", tmp_path / "kit"
    for out in (first, second, unpacked):
        done = stella("export", *KIT_WINDOW, "--out", str(out), "-o", "json", env=service.env)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # no progress display when stderr is not a terminal
    assert first.read_bytes() == second.read_bytes()
    summary = json.loads(done.stdout)
    assert summary["ledger"] >= 1 and summary["rootHash"].startswith("sha256:")
    assert finished_run["runId"] in (unpacked / "ledger.ndjson").read_text()

    for path in (first, unpacked):
        verified = stella("export", "verify", str(path), "-o", "json", env=service.env)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["ok"] is True

    ledger = unpacked / "ledger.ndjson"
    ledger.write_bytes(ledger.read_bytes().replace(b'"succeeded"', b'"failed"', 1))
    broken = stella("export", "verify", str(unpacked), env=service.env)
    assert broken.returncode == 1
    assert_one_error_line(broken, "EXPORT_BROKEN")
    assert "ledger.ndjson: size is" in broken.stderr
    missing = stella("export", "verify", str(tmp_path / "nowhere.tgz"), env=service.env)
    assert missing.returncode == 2
    taken = stella("export", *KIT_WINDOW, "--out", str(unpacked), env=service.env)
    assert taken.returncode == 2
    assert_one_error_line(taken, "USAGE_INVALID")


def test_export_shows_progress_on_a_terminal(service: Service, tmp_path: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            argv("export", *KIT_WINDOW, "--out", str(tmp_path / "kit.tgz")),
            env={**service.env, "TERM": "xterm", "COLUMNS": "100"},
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=TIMEOUT,
        )
        os.close(follower)
        follower = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once the pty is drained and closed
            while chunk := os.read(leader, 65536):
                shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert done.returncode == 0
    assert b"export: downloading" in shown


def test_api_and_worker_processes_share_the_store_and_stop_on_sigterm(
    service: Service, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **service.env,
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{tmp_path}/split.db",
        "STELLA_API_URL": f"http://127.0.0.1:{port}",
    }
    api = subprocess.Popen(
        argv("api", "--port", str(port)), env=env, stdout=subprocess.PIPE, text=True
    )
    worker = subprocess.Popen(
        argv("worker", "--concurrency", "4"), env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert "ready: API on" in LineReader(api.stdout).until("ready: ", TIMEOUT)[-1]
        assert "ready: worker" in LineReader(worker.stdout).until("ready: ", TIMEOUT)[-1]
        spec = tmp_path / "hello.yaml"
        spec.write_text(NEW_DAG)
        published = stella("dag", "publish", "--file", str(spec), "--reason", "split", env=env)
        assert published.returncode == 0, published.stderr
        inline = tmp_path / "inline.yaml"
        inline.write_text(INLINE_DAG)
        refused = stella("dag", "publish", "--file", str(inline), "--reason", "split", env=env)
        assert refused.returncode == 2, refused.stderr  # api processes refuse inline scripts
        assert "DAG_SPEC_INVALID" in refused.stderr
        assert "STELLA_ORCH_INLINE_SCRIPTS" in refused.stderr
        done = stella("run", "start", "--dag-id", "hello", "--wait", "-o", "json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "completed"
    finally:
        codes = (stop(api), stop(worker))
    assert codes == (0, 0)


def test_the_http_sample_calls_the_local_readiness_endpoint(
    service: Service, tmp_path: Path
) -> None:
    # the sample targets the quick start's port 8440; this server listens on a free port
    port = service.env["STELLA_API_URL"].rsplit(":", 1)[1]
    sample = EXAMPLES / "http"
    spec = tmp_path / "service-readiness.yaml"
    spec.write_text((sample / "service-readiness.yaml").read_text().replace("8440", port))
    inputs = tmp_path / "inputs.json"
    inputs.write_text((sample / "inputs.json").read_text().replace("8440", port))
    published = stella("dag", "publish", "--file", str(spec), "--reason", "sample", env=service.env)
    assert published.returncode == 0, published.stderr
    args = ["--dag-id", "service-readiness", "--inputs", str(inputs), "--wait", "-o", "json"]
    done = stella("run", "start", *args, env=service.env)
    assert done.returncode == 0, done.stderr + done.stdout
    steps = {s["stepId"]: s for s in json.loads(done.stdout)["steps"]}
    assert steps["probe"]["outputs"]["status"] == 200
    assert steps["report"]["outputs"] == {"status": 200, "ready": True, "writable": True}
