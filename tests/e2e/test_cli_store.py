"""The store's health from the command line: `db check` exit codes, `serve` refusing a bad store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from services import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 60


def stella(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `stella orch ARGS` to completion, without the host's STELLA_ORCH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLA_ORCH_")}
    command = [sys.executable, "-m", "stellaorch.cli.main", "orch", *args]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def store_with_a_run(tmp_path: Path) -> Path:
    """A SQLite store holding one finished run of a shipped example."""
    path = tmp_path / "o.db"
    inputs = str(EXAMPLES / "inputs" / "long-chain.json")
    done = stella(
        "local", "run", "--dags", str(EXAMPLES), "--dag-id", "long-chain",
        "--inputs", inputs, "--db", f"sqlite:///{path}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def corrupt_table(path: Path, table: str) -> None:
    """Overwrite bytes in the middle of the table's root page."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        [(root,)] = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
    finally:
        conn.close()
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size + 8)
        handle.write(b"\xff" * 64)


def test_db_check_of_a_sound_store_exits_0_with_its_report(tmp_path: Path) -> None:
    path = store_with_a_run(tmp_path)

    done = stella("db", "check", "--db", f"sqlite:///{path}", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["check"] == "full" and report["problems"] == []


def test_db_check_of_a_corrupted_store_exits_1_and_names_the_problem(tmp_path: Path) -> None:
    path = store_with_a_run(tmp_path)
    corrupt_table(path, "ledger_entries")

    done = stella("db", "check", "--db", f"sqlite:///{path}", cwd=tmp_path)

    assert done.returncode == 1
    assert json.loads(done.stdout)["ok"] is False
    assert done.stderr.startswith("error: STORE_CORRUPT: ")


def test_db_check_never_creates_a_store(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"

    done = stella("db", "check", "--db", f"sqlite:///{path}", cwd=tmp_path)

    assert done.returncode == 4
    assert "STORE_NOT_FOUND" in done.stderr
    assert not path.exists()


def test_db_check_of_a_zero_byte_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.touch()

    done = stella("db", "check", "--quick", "--db", f"sqlite:///{path}", cwd=tmp_path)

    assert done.returncode == 1
    assert "STORE_CORRUPT" in done.stderr and path.stat().st_size == 0


def test_db_check_of_a_store_it_cannot_reach_exits_10(tmp_path: Path) -> None:
    # Nothing listens on port 1 of the loopback interface: the connection is refused.
    url = "postgresql://stella@127.0.0.1:1/stella"

    done = stella("db", "check", "--db", url, cwd=tmp_path)

    assert done.returncode == 10, done.stderr
    assert "STORE_UNAVAILABLE" in done.stderr


def test_serve_refuses_a_corrupted_store_with_one_line_and_exit_1(tmp_path: Path) -> None:
    path = store_with_a_run(tmp_path)
    corrupt_table(path, "runs")

    done = stella(
        "serve",
        "--insecure-dev",
        "--port",
        str(free_port()),
        "--db",
        f"sqlite:///{path}",
        cwd=tmp_path,
    )

    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: STORE_CORRUPT: "), done.stderr
    assert "ready:" not in done.stdout


def test_serve_refuses_a_zero_byte_store_file(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.touch()

    done = stella(
        "serve",
        "--insecure-dev",
        "--port",
        str(free_port()),
        "--db",
        f"sqlite:///{path}",
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert "error: STORE_CORRUPT: " in done.stderr and path.stat().st_size == 0
