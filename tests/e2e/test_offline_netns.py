"""The product runs with no network at all: `serve` with the sample DAGs (their script steps
in the sandbox), the API, the console and the span file, in an empty network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SAMPLES = 3  # the DAG files in examples/

# Runs inside the namespace: starts serve on a free port of it, waits for every sample run's
# outcome, reads the API and the console over loopback, proves that nothing outside is
# reachable, then stops serve.
DRIVER = textwrap.dedent(
    """
    import fcntl, json, signal, socket, struct, subprocess, sys, time, urllib.request
    examples, workdir = sys.argv[1], sys.argv[2]
    # A new namespace's loopback is down: bring it up (SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sh", fcntl.ioctl(probe, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(probe, 0x8914, struct.pack("16sh", b"lo", flags | 1))
    try:
        socket.create_connection(("10.255.255.1", 443), timeout=2)
        print("REACHED THE NETWORK"); sys.exit(3)
    except OSError as exc:
        print("no route out:", exc.errno)
    # A free port of the namespace (nothing else lives in it, but never assume a fixed one).
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stellaorch.cli.main", "orch", "serve", "--dags", examples,
         "--db", f"sqlite:///{workdir}/o.db", "--port", str(port), "--run-samples"],
        cwd=workdir, stdout=subprocess.PIPE, text=True)
    outcomes, deadline = [], time.monotonic() + 90
    for line in proc.stdout:
        line = line.rstrip()
        print("serve:", line, flush=True)
        if line.startswith("run ") and not line.endswith(": started"):
            outcomes.append(line)
        if len(outcomes) == %(samples)d or time.monotonic() > deadline:
            break
    ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10).status
    console = urllib.request.urlopen(f"http://127.0.0.1:{port}/console/", timeout=10)
    page = console.read().decode()
    print("readyz", ready, "console", console.status, "http://" in page.replace(
        "http://127.0.0.1", ""))
    proc.send_signal(signal.SIGTERM)
    print("exit", proc.wait(timeout=30))
    print("OUTCOMES", json.dumps(outcomes))
    """
) % {"samples": SAMPLES}


def test_serve_runs_the_samples_in_an_empty_network_namespace(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        if os.environ.get("STELLA_TEST_SANDBOX_REQUIRED") == "1":
            pytest.fail("unshare (util-linux) as root is required for the no-network test")
        pytest.skip("needs unshare and root to make a network namespace")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLA_ORCH_")}
    # A new network namespace only: the steps' own sandbox (bubblewrap) runs inside it as usual.
    command = [unshare, "--net", "--", sys.executable, str(driver), str(EXAMPLES), str(tmp_path)]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "no route out:" in out
    assert "readyz 200 console 200 False" in out, out  # the page names no other origin
    assert "exit 0" in out, out + done.stderr
    outcomes = [line for line in out.splitlines() if line.startswith("OUTCOMES")]
    assert outcomes and outcomes[0].count(": completed in ") == SAMPLES, out
    assert (tmp_path / ".stella" / "traces.ndjson").stat().st_size > 0  # spans, offline
