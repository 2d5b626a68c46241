"""The `stella orch` CLI as a user runs it: real processes, a temp SQLite store, exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from services import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_IDS = ["flaky-import", "long-chain", "nightly-feed-refresh"]
TIMEOUT = 60

FAILING_DAG = """\
dagId: boom
version: 1
steps:
  - {id: prepare, plugin: noop}
  - {id: explode, plugin: fail, with: {code: BOOM, message: it broke}}
  - {id: after, plugin: noop}
edges:
  - {from: prepare, to: explode}
  - {from: explode, to: after}
"""

INVALID_DAG = """\
dagId: broken
version: 1
steps:
  - {id: fetch, plugin: noop}
  - {id: Bad_Id, plugin: noop}
edges:
  - {from: fetch, to: nowhere}
"""


def clean_env() -> dict[str, str]:
    """The environment without STELLA_ORCH_* settings, so the host cannot leak into a test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STELLA_ORCH_")}


def argv(*args: str) -> list[str]:
    """The command line of `stella orch ARGS`, run with this interpreter."""
    return [sys.executable, "-m", "stellaorch.cli.main", "orch", *args]


def stella(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `stella orch ARGS` to completion."""
    return subprocess.run(
        argv(*args),
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    """`--db` flags for a fresh SQLite store in the test's directory."""
    return ["--db", f"sqlite:///{tmp_path}/o.db"]


def run_example(dag_id: str, db: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`local run` of one of the shipped examples with its sample inputs."""
    inputs = str(EXAMPLES / "inputs" / f"{dag_id}.json")
    args = ["local", "run", "--dags", str(EXAMPLES), "--dag-id", dag_id, "--inputs", inputs]
    return stella(*args, *db, cwd=cwd)


def assert_one_error_line(stderr: str, code: str) -> None:
    """Exactly one readable `error: CODE: …` line, and no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {code}: "), stderr
    assert "Traceback" not in stderr


class LineReader:
    """Reads a pipe on a thread, so a test can wait for a line with a timeout."""

    def __init__(self, pipe: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def until(self, prefix: str, timeout: float) -> list[str]:
        """Lines up to and including the first that starts with `prefix`."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if line.startswith(prefix):
                return seen
        raise AssertionError(f"no line starting with {prefix!r} within {timeout}s; got {seen}")

    def rest(self) -> list[str]:
        """Every remaining line, once the pipe has closed."""
        self._thread.join(timeout=15)
        lines = []
        while not self._lines.empty():
            line = self._lines.get()
            if line is not None:
                lines.append(line)
        return lines


def start_serve(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """`stella orch serve` on the examples in the background."""
    db = f"sqlite:///{tmp_path}/o.db"
    return subprocess.Popen(
        argv("serve", "--dags", str(EXAMPLES), "--db", db, "--port", str(free_port()), *extra),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def readers(proc: subprocess.Popen[str]) -> tuple[LineReader, LineReader]:
    """Readers of stdout and stderr (both drained, so the child never blocks on a pipe)."""
    assert proc.stdout is not None and proc.stderr is not None
    return LineReader(proc.stdout), LineReader(proc.stderr)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process and wait for it (killing it if it hangs)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.parametrize("dag_id", EXAMPLE_IDS)
def test_each_example_validates(dag_id: str, tmp_path: Path) -> None:
    done = stella(
        "dag", "validate", str(EXAMPLES / f"{dag_id}.yaml"), "--output", "json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["dagId"] == dag_id
    assert summary["specHash"].startswith("sha256:")


@pytest.mark.parametrize("dag_id", EXAMPLE_IDS)
def test_local_run_of_each_example_completes(dag_id: str, db: list[str], tmp_path: Path) -> None:
    done = run_example(dag_id, db, tmp_path)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["dagId"] == dag_id
    assert run["status"] == "completed"
    assert {s["status"] for s in run["steps"]} <= {"succeeded", "skipped"}


def test_fan_in_merges_the_counts_of_the_parallel_fetches(db: list[str], tmp_path: Path) -> None:
    run = json.loads(run_example("nightly-feed-refresh", db, tmp_path).stdout)
    steps = {s["stepId"]: s for s in run["steps"]}
    assert steps["merge"]["outputs"]["total"] == 120 + 45 + 7
    published = {"channel": "stable", "date": "2025-11-26", "published": 172}
    assert steps["publish"]["outputs"] == published
    assert steps["fetch-legacy-mirror"]["status"] == "skipped"


def test_flaky_step_succeeds_on_its_third_attempt(db: list[str], tmp_path: Path) -> None:
    run = json.loads(run_example("flaky-import", db, tmp_path).stdout)
    steps = {s["stepId"]: s for s in run["steps"]}
    attempts = [a["status"] for a in steps["import-batch"]["attempts"]]
    assert attempts == ["failed", "failed", "succeeded"]


def test_failing_dag_exits_1_and_prints_the_failed_run(db: list[str], tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "boom.yaml").write_text(FAILING_DAG)
    done = stella("local", "run", "--dags", "dags", "--dag-id", "boom", *db, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "failed"
    assert run["error"]["code"] == "BOOM"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "failed", "cancelled"]
    assert_one_error_line(done.stderr, "RUN_FAILED")


def test_malformed_inputs_file_exits_2_with_one_line(db: list[str], tmp_path: Path) -> None:
    (tmp_path / "inputs.json").write_text("{not json")
    args = ["local", "run", "--dags", str(EXAMPLES), "--dag-id", "long-chain"]
    done = stella(*args, "--inputs", "inputs.json", *db, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert_one_error_line(done.stderr, "INPUTS_INVALID")


def test_inputs_that_are_not_an_object_exit_2(db: list[str], tmp_path: Path) -> None:
    (tmp_path / "inputs.json").write_text("[1, 2]")
    done = stella(
        "local", "run", "--dag-id", "long-chain", "--inputs", "inputs.json", *db, cwd=tmp_path
    )
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "INPUTS_INVALID")


def test_unknown_dag_id_exits_4(db: list[str], tmp_path: Path) -> None:
    done = stella("local", "run", "--dag-id", "no-such-dag", *db, cwd=tmp_path)
    assert done.returncode == 4
    assert_one_error_line(done.stderr, "DAG_NOT_FOUND")


def test_unknown_run_id_exits_4(db: list[str], tmp_path: Path) -> None:
    run_id = "01a21a8e-0000-7000-8000-000000000000"
    done = stella("local", "show", "--run-id", run_id, *db, cwd=tmp_path)
    assert done.returncode == 4
    assert_one_error_line(done.stderr, "RUN_NOT_FOUND")


def test_validate_of_invalid_spec_exits_2_listing_each_problem_path(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(INVALID_DAG)
    done = stella("dag", "validate", "broken.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: DAG_SPEC_INVALID: ")
    problem_lines = done.stderr.splitlines()[1:]
    assert any(line.strip().startswith("steps[1].id:") for line in problem_lines), done.stderr
    assert any(line.strip().startswith("edges[0].to:") for line in problem_lines), done.stderr
    assert "Traceback" not in done.stderr


def test_cancel_of_completed_run_is_rejected_with_exit_6(db: list[str], tmp_path: Path) -> None:
    run_id = json.loads(run_example("long-chain", db, tmp_path).stdout)["runId"]
    done = stella("local", "cancel", "--run-id", run_id, *db, cwd=tmp_path)
    assert done.returncode == 6
    run = json.loads(done.stdout)
    assert run["status"] == "completed"
    assert run["cancelRejected"] is True
    assert_one_error_line(done.stderr, "CANCEL_REJECTED")


def test_verify_of_a_finished_run_reports_an_intact_chain(db: list[str], tmp_path: Path) -> None:
    run_id = json.loads(run_example("flaky-import", db, tmp_path).stdout)["runId"]
    done = stella("local", "verify", "--run-id", run_id, *db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["count"] > 0


def test_verify_of_a_run_whose_rows_were_edited_exits_1(db: list[str], tmp_path: Path) -> None:
    run_id = json.loads(run_example("flaky-import", db, tmp_path).stdout)["runId"]
    with contextlib.closing(sqlite3.connect(tmp_path / "o.db")) as conn, conn:
        conn.execute("UPDATE step_executions SET attempt = attempt + 1 WHERE run_id = ?", (run_id,))

    done = stella("local", "verify", "--run-id", run_id, *db, cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["check"] == "state"
    assert_one_error_line(done.stderr, "LEDGER_BROKEN")
    assert "does not match its ledger (state)" in done.stderr


def test_invalid_setting_from_the_environment_exits_2(tmp_path: Path) -> None:
    env = {**clean_env(), "STELLA_ORCH_WORKER_CONCURRENCY": "many"}
    done = stella("db", "upgrade", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "SETTINGS_INVALID")
    assert "STELLA_ORCH_WORKER_CONCURRENCY" in done.stderr


def test_serve_publishes_the_examples_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = start_serve(tmp_path)
    try:
        out, err = readers(proc)
        lines = out.until("ready", timeout=30)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    log = err.rest()
    assert proc.returncode == 0, log
    published = [line for line in lines if line.startswith("dag ")]
    assert [line.split()[1] for line in published] == EXAMPLE_IDS
    assert out.rest()[-1:] == ["stopped"]
    records = [json.loads(line) for line in log]
    assert "orchestrator.stopped" in {r["event"] for r in records}


def test_serve_runs_the_samples_and_prints_each_outcome(tmp_path: Path) -> None:
    proc = start_serve(tmp_path, "--run-samples")
    try:
        out, _err = readers(proc)
        out.until("ready", timeout=30)
        outcomes: list[str] = []
        while len(outcomes) < len(EXAMPLE_IDS):
            line = out.until("run ", timeout=30)[-1]
            if not line.endswith(": started"):
                outcomes.append(line)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert all(": completed in " in line for line in outcomes), outcomes


def test_run_samples_without_dags_is_a_usage_error(tmp_path: Path) -> None:
    done = stella("serve", "--run-samples", "--db", f"sqlite:///{tmp_path}/o.db", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: USAGE_INVALID: ")


def test_local_run_prints_tables_with_output_table(db: list[str], tmp_path: Path) -> None:
    args = ["local", "run", "--dags", str(EXAMPLES), "--dag-id", "long-chain", "-o", "table"]
    done = stella(*args, *db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN_ID", "DAG_ID", "VERSION", "STATUS"]
    assert lines[1].split()[3] == "completed"
    assert any(line.startswith("STEP_ID ") for line in lines)
