"""bench/sdk.py and bench/console.py at their smallest: each prints its table with measured figures.

The targets are not asserted (the machine is shared); only that every figure was measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (?P<scenario>[^|]+?) +\| (?P<measure>[^|]+?) +\| +(?P<value>[^ |]+) \|")


def bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script with this tree's package."""
    path = f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
        cwd=ROOT,
    )


def run_bench(script: str, *args: str) -> dict[tuple[str, str], float]:
    """Its table as {(scenario, measure): value}; exit 1 (a missed target) is fine."""
    done = bench(script, *args)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    rows = {}
    for line in done.stdout.splitlines():
        found = ROW.match(line)
        if found and found["scenario"] != "scenario":
            rows[(found["scenario"], found["measure"])] = float(found["value"])
    return rows


def test_the_sdk_benchmark_measures_chain_burst_and_latency() -> None:
    rows = run_bench("sdk.py", "--chain", "5", "--burst", "10")
    assert set(rows) == {
        ("chain of 5", "per step"),
        ("burst of 10", "throughput"),
        ("queued -> handler (chain)", "p50"),
        ("queued -> handler (chain)", "p99"),
    }, rows
    assert all(value > 0 for value in rows.values()), rows


def test_the_console_benchmark_measures_the_list_and_the_detail() -> None:
    rows = run_bench(
        "console.py", "--runs", "300", "--steps", "10", "--requests", "3", "--no-browser"
    )
    measured = {key for key in rows if key[1].startswith("server")}
    assert measured == {
        ("run list, 300 runs", "server p50"),
        ("run list, 300 runs", "server p95"),
        ("detail, 10 steps", "server p50"),
        ("detail, 10 steps", "server p95"),
    }, rows
    assert all(value > 0 for value in rows.values()), rows


def test_the_sdk_benchmark_refuses_sizes_it_cannot_measure() -> None:
    done = bench("sdk.py", "--chain", "0")
    assert done.returncode == 2 and "must be >= 1" in done.stderr, done.stderr
