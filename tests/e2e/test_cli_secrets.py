"""`stella orch secret …`, `admin warm` and `keys rotate-secrets-key` against a real `serve`.

The value goes in through stdin or a file, a script step prints it raw and base64, and then
the store files, the service's log and a `ledger export` are grepped for it: nothing.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
from services import Service, api_token, base_env, free_port, service

TIMEOUT = 60
VALUE = "e2e-S3cret/value+with=odd&chars"
NEW_VALUE = "e2e-second/value+99"
DAG = """\
dagId: leak
version: 1
steps:
  - id: print
    plugin: script
    with:
      command: [/bin/sh, -c, 'echo "$S"; printf %s "$S" | base64; echo "{\\"got\\": \\"$S\\"}"']
      env: {S: "${secrets.api-key}"}
"""

# The plugin-auth incident: a partner API call whose credential is the secret `svc-token`.
PARTNER_DAG = """\
dagId: partner-sync
version: 1
steps:
  - id: sync
    plugin: http
    network: ["127.0.0.1:PORT"]
    with:
      url: http://127.0.0.1:PORT/sync
      headers: {Authorization: "Bearer ${secrets.svc-token}"}
"""
ENDED = {"completed", "failed", "cancelled"}


@dataclass
class Served:
    """The serve process, its files and its clients' environment."""

    proc: Service
    env: dict[str, str]
    workdir: Path

    @property
    def key_file(self) -> Path:
        """The secrets' key-encryption key file."""
        return self.workdir / "keys" / "secrets.kek"


def stella(
    served: Served, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `stella orch ARGS` against the served API."""
    argv = [sys.executable, "-m", "stellaorch.cli.main", "orch", *args]
    return subprocess.run(
        argv, env=served.env, input=stdin, capture_output=True, text=True, timeout=TIMEOUT
    )


def ok_json(served: Served, *args: str, stdin: str | None = None) -> Any:
    """A command with `-o json` that must succeed; its stdout parsed."""
    done = stella(served, *args, "-o", "json", stdin=stdin)
    assert done.returncode == 0, (args, done.stderr)
    return json.loads(done.stdout)


def one_error(done: subprocess.CompletedProcess[str], exit_code: int, code: str) -> None:
    """The exit code, and exactly one `error: CODE: …` line on stderr."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == exit_code, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), done.stderr


def file_bytes(name: str) -> bytes:
    """The content of the file named `name`."""
    return Path(name).read_bytes()


def forms(value: str) -> list[bytes]:
    """The value raw, base64 and URL-encoded."""
    raw = value.encode()
    return [raw, base64.b64encode(raw), quote(value, safe="").encode()]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """`serve` on a SQLite file in tmp_path, sandbox off, with an admin token."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "leak.yaml").write_text(DAG)
    keys = tmp_path / "keys"
    token = api_token(keys, "default", ["orchestrator:admin"])
    db = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    settings = {
        "STELLA_ORCH_KEYS_DIR": str(keys),
        "STELLA_ORCH_SANDBOX": "off",
        "STELLA_ORCH_POLL_INTERVAL_SECONDS": "0.05",
    }
    args = ("--dags", str(dags))
    async with service("serve", db, tmp_path / "serve.log", settings, args) as proc:
        assert proc.port is not None
        env = {
            **base_env(),
            **settings,
            "STELLA_ORCH_DATABASE_URL": db,
            "STELLA_API_URL": proc.url,
            "STELLA_TOKEN": token,
            "STELLA_TENANT": "default",
        }
        yield Served(proc, env, tmp_path)


def run_leak(served: Served) -> dict[str, Any]:
    """`run start --wait` of the printing DAG; it must complete."""
    run: dict[str, Any] = ok_json(served, "run", "start", "--dag-id", "leak", "--wait")
    assert run["status"] == "completed", run
    return run


async def test_put_list_use_rotate_and_delete_leave_no_trace(served: Served) -> None:
    put = ok_json(
        served, "secret", "put", "api-key", "--from-stdin", "--reason", "t", stdin=VALUE + "\n"
    )
    assert put["currentVersion"] == 1 and VALUE not in json.dumps(put)
    assert stat.S_IMODE(served.key_file.stat().st_mode) == 0o600
    run_leak(served)
    new = served.workdir / "new.txt"
    new.write_text(NEW_VALUE)
    assert (
        ok_json(served, "secret", "put", "api-key", "--from-file", str(new), "--reason", "rotate")[
            "currentVersion"
        ]
        == 2
    )
    warmed = ok_json(served, "admin", "warm", "--reason", "rotated api-key")
    assert warmed["workers"][0]["warmed"]["secrets"]["values"] == 2
    run = run_leak(served)
    listed = ok_json(served, "secret", "list")["items"]
    assert [(i["name"], i["currentVersion"]) for i in listed] == [("api-key", 2)]
    out = served.workdir / "export.ndjson"
    done = stella(
        served,
        "ledger",
        "export",
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        "2999-01-01T00:00:00Z",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert run["runId"].encode() in out.read_bytes()
    db = served.workdir / "orchestrator.db"
    files = [out, served.workdir / "serve.log", db, db.with_name(db.name + "-wal")]
    for path in files:
        data = path.read_bytes() if path.exists() else b""
        assert not [f for v in (VALUE, NEW_VALUE) for f in forms(v) if f in data], path.name
    assert stella(served, "secret", "delete", "api-key", "--reason", "done").returncode == 0
    one_error(
        stella(served, "secret", "delete", "api-key", "--reason", "again"), 4, "SECRET_NOT_FOUND"
    )


async def test_bad_input_is_one_error_line_with_the_usage_exit_code(served: Served) -> None:
    one_error(stella(served, "secret", "put", "api-key", "--reason", "r"), 2, "USAGE_INVALID")
    value_file = served.workdir / "v.txt"
    value_file.write_text(VALUE)
    both = ("secret", "put", "x", "--from-file", str(value_file), "--from-stdin", "--reason", "r")
    one_error(stella(served, *both), 2, "USAGE_INVALID")
    bad = stella(served, "secret", "put", "bad name", "--from-stdin", "--reason", "r", stdin="v")
    one_error(bad, 2, "SECRET_INVALID")
    empty = stella(served, "secret", "put", "x", "--from-stdin", "--reason", "r", stdin="\n")
    one_error(empty, 2, "SECRET_INVALID")


async def test_rotating_the_key_reseals_and_the_running_service_still_resolves(
    served: Served,
) -> None:
    ok_json(served, "secret", "put", "api-key", "--from-stdin", "--reason", "t", stdin=VALUE)
    before = served.key_file.read_bytes()
    done = stella(served, "keys", "rotate-secrets-key")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resealed"] == 1 and report["kekId"] != report["previousKekId"]
    assert served.key_file.read_bytes() != before
    assert file_bytes(report["retiredKeyFile"]) == before
    assert stat.S_IMODE(served.key_file.stat().st_mode) == 0o600
    run_leak(served)  # the serve process re-reads the key file when it meets the new key id


def test_a_key_file_others_can_read_stops_the_service(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key_file = keys / "secrets.kek"
    key_file.write_text(base64.b64encode(b"k" * 32).decode())
    key_file.chmod(0o644)
    env = {
        **base_env(),
        "STELLA_ORCH_KEYS_DIR": str(keys),
        "STELLA_ORCH_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}",
    }
    argv = [
        sys.executable,
        "-m",
        "stellaorch.cli.main",
        "orch",
        "serve",
        "--port",
        str(free_port()),
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr
    assert "SECRET_KEY_INVALID" in done.stderr and "0644" in done.stderr
    assert "chmod 600" in done.stderr


class _Partner(http.server.BaseHTTPRequestHandler):
    """A partner API that accepts only the credential in `accepted`."""

    accepted: ClassVar[str] = ""
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        given = self.headers.get("Authorization", "")
        self.seen.append(given)
        ok = given == f"Bearer {self.accepted}"
        body = b'{"synced": true}' if ok else b'{"error": "bad credential"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `seen`, not stderr."""


@pytest.fixture
def partner() -> Iterator[tuple[int, type[_Partner]]]:
    """The partner API on a free loopback port; it accepts NEW_VALUE only."""
    handler = type("Partner", (_Partner,), {"accepted": NEW_VALUE, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


async def test_the_plugin_auth_incident_as_the_operator_guide_plays_it(
    served: Served, partner: tuple[int, type[_Partner]]
) -> None:
    port, handler = partner
    old, new = served.workdir / "old-token", served.workdir / "new-token"
    old.write_text(VALUE)
    new.write_text(NEW_VALUE)
    ok_json(served, "secret", "put", "svc-token", "--from-file", str(old), "--reason", "setup")
    spec = served.workdir / "partner-sync.yaml"
    spec.write_text(PARTNER_DAG.replace("PORT", str(port)))
    ok_json(served, "dag", "publish", "--file", str(spec), "--reason", "partner sync")
    failed = []
    for _ in range(3):
        done = stella(served, "run", "start", "--dag-id", "partner-sync", "--wait", "-o", "json")
        assert done.returncode == 1, done.stderr  # the run failed
        run = json.loads(done.stdout)
        assert run["error"]["code"] == "PLUGIN_AUTH_FAILED", run
        failed.append(run["runId"])

    # the operator guide's "Plugin auth errors" sequence, command by command
    groups = ok_json(served, "deadletter", "list")["items"]
    assert [(g["code"], g["count"]) for g in groups] == [("PLUGIN_AUTH_FAILED", 3)], groups
    listed = ok_json(served, "secret", "list")["items"]
    assert [(i["name"], i["currentVersion"]) for i in listed] == [("svc-token", 1)]
    ticket = ["--ticket", "INC-90"]
    reason = "svc-token revoked upstream"
    put = ["secret", "put", "svc-token", "--from-file", str(new), "--reason", reason, *ticket]
    assert ok_json(served, *put)["currentVersion"] == 2
    new.unlink()
    ok_json(served, "admin", "warm", "--reason", "svc-token rotated", *ticket)
    replay = [
        "deadletter",
        "replay",
        "--code",
        "PLUGIN_AUTH_FAILED",
        "--reason",
        "svc-token rotated",
    ]
    done = stella(served, *replay, *ticket)
    assert done.returncode == 0, done.stderr

    replays = await _replays_of(served, failed)
    assert sorted(r["replayOf"] for r in replays) == sorted(failed)
    assert {r["status"] for r in replays} == {"completed"}, replays
    assert handler.seen.count(f"Bearer {NEW_VALUE}") == 3
    assert handler.seen.count(f"Bearer {VALUE}") == 3
    for run in replays:
        shown = ok_json(served, "run", "show", "--run-id", run["runId"])
        assert shown["steps"][0]["outputs"]["json"] == {"synced": True}

    out = served.workdir / "export.ndjson"
    window = ["--from", "2000-01-01T00:00:00Z", "--to", "2999-01-01T00:00:00Z"]
    assert stella(served, "ledger", "export", *window, "--out", str(out)).returncode == 0
    db = served.workdir / "orchestrator.db"
    for path in [out, served.workdir / "serve.log", db, db.with_name(db.name + "-wal")]:
        data = path.read_bytes() if path.exists() else b""
        assert not [f for v in (VALUE, NEW_VALUE) for f in forms(v) if f in data], path.name


async def _replays_of(served: Served, failed: list[str]) -> list[dict[str, Any]]:
    """The replays of the failed runs, once every one of them has ended (within TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        runs = ok_json(served, "run", "list", "--dag-id", "partner-sync")["items"]
        replays = [r for r in runs if r.get("replayOf") in failed]
        if len(replays) == len(failed) and all(r["status"] in ENDED for r in replays):
            return replays
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.2)
