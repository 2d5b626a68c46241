"""Attacks on the step sandbox with real bubblewrap: each is an escape that must now fail.

Every test runs its steps as a uid of its own, so "no process of the step remains" can be
checked by looking for any process of that uid on the host afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stellaorch.domain.errors import StepFailed
from stellaorch.plugins import PluginResult, ScriptPlugin, StepContext
from stellaorch.plugins.sandbox import Limits, Sandbox, SandboxConfig

pytestmark = pytest.mark.usefixtures("require_sandbox")

SMALL = Limits(
    cpu_seconds=10,
    memory_mb=512,
    processes=64,
    open_files=256,
    file_size_mb=64,
    tmp_mb=8,
    work_mb=16,
)


@pytest.fixture
def uid() -> int:
    """A uid no other process on this machine uses."""
    return random.randrange(200_000, 2_000_000)


@pytest.fixture
def plugin(uid: int) -> ScriptPlugin:
    """The script plugin in a sandbox with small limits, as `uid` when the tests run as root."""
    config = SandboxConfig(uid=uid, gid=uid, defaults=SMALL, ceiling=SMALL)
    return ScriptPlugin(sandbox=Sandbox(config), kill_grace_seconds=0.5)


def ctx(command: Any, *, resources: dict[str, float] | None = None, **params: Any) -> StepContext:
    """A context for one attempt running `command`."""
    return StepContext(
        tenant="acme",
        run_id="run-1",
        dag_id="dag",
        step_id="attack",
        attempt=1,
        params={"command": command, **params},
        timeout_seconds=30.0,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        resources=resources or {},
    )


async def run(plugin: ScriptPlugin, command: Any, **kwargs: Any) -> PluginResult:
    """Run one step that must succeed."""
    return await plugin.run(ctx(command, **kwargs))


async def fail(plugin: ScriptPlugin, command: Any, **kwargs: Any) -> StepFailed:
    """Run one step that must fail, and return its error."""
    with pytest.raises(StepFailed) as raised:
        await plugin.run(ctx(command, **kwargs))
    return raised.value


def processes_of(uid: int) -> list[int]:
    """Host pids of live (non-zombie) processes whose real uid is `uid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z"):
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) == uid:
            found.append(int(entry.name))
    return found


async def assert_no_process_left(uid: int) -> None:
    """Within 2 s of the step's end, nothing of it runs any more."""
    if os.geteuid() != 0:
        pytest.skip("not root: steps keep the worker's uid, so they cannot be told apart")
    for _ in range(100):
        if not processes_of(uid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"processes of the step outlived it: {processes_of(uid)}")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that a step must not reach; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


# --- what the step can see ------------------------------------------------------------
async def test_step_runs_as_an_unprivileged_uid(plugin: ScriptPlugin, uid: int) -> None:
    result = await run(plugin, ["id", "-u"])
    assert result.logs.strip() == str(uid if os.geteuid() == 0 else 65534)
    assert result.logs.strip() != "0"


async def test_host_files_keys_and_database_do_not_exist_inside(
    plugin: ScriptPlugin, tmp_path: Path
) -> None:
    key = tmp_path / ".stella" / "keys" / "server.private.pem"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n")
    database = tmp_path / ".stella" / "orchestrator.db"
    database.write_text("SQLite format 3\0tenant-b-inputs")
    for target in (key, database, key.parent, Path.cwd(), Path("/root"), Path("/etc/shadow")):
        error = await fail(plugin, ["cat", str(target)])
        assert error.code == "SCRIPT_EXIT_NONZERO", target
        assert "No such file or directory" in error.logs, target
        assert "SECRET-KEY-MATERIAL" not in error.logs
    listing = await run(plugin, "ls -a / /etc")
    assert ".stella" not in listing.logs and "shadow" not in listing.logs


HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HAS_CA_BUNDLE = os.path.exists(HOST_CA_BUNDLE)


async def test_etc_holds_the_harmless_host_files_but_no_tls_private_keys(
    plugin: ScriptPlugin,
) -> None:
    result = await run(plugin, "ls -A /etc /etc/ssl; cat /etc/passwd")
    assert "private" not in result.logs and "shadow" not in result.logs
    assert "ld.so.cache" in result.logs and "stella step" in result.logs
    if HAS_CA_BUNDLE:  # TLS clients find the CA bundle
        bundle = await run(plugin, ["head", "-c", "27", HOST_CA_BUNDLE])
        assert bundle.logs.startswith("-----BEGIN CERTIFICATE-----")


async def test_system_is_read_only_and_only_work_and_tmp_are_writable(
    plugin: ScriptPlugin,
) -> None:
    for path in ("/usr/pwned", "/etc/pwned", "/pwned", "/bin/pwned"):
        error = await fail(plugin, ["touch", path])
        assert "Read-only file system" in error.logs or "Permission denied" in error.logs
    result = await run(plugin, "touch /work/a /tmp/b && pwd && echo $HOME")
    assert result.logs.splitlines() == ["/work", "/work"]


async def test_other_attempts_work_dirs_are_not_shared(plugin: ScriptPlugin) -> None:
    await run(plugin, "echo left-behind > /work/note; echo x > /tmp/note")
    result = await run(plugin, "ls -A /work /tmp")
    assert "note" not in result.logs


async def test_proc_shows_only_the_steps_own_processes(plugin: ScriptPlugin) -> None:
    result = await run(plugin, "ls /proc | grep -c '^[0-9]'")
    # bubblewrap's init, the leader that measures the step's usage, sh, ls, grep
    assert int(result.logs.strip()) <= 5


async def test_environment_is_only_what_the_step_declares(
    plugin: ScriptPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_ORCH_DATABASE_URL", "sqlite:////secret/path.db")
    result = await run(plugin, ["env"], env={"GREETING": "hi"})
    names = {line.split("=", 1)[0] for line in result.logs.splitlines()}
    assert names == {
        *("PATH", "HOME", "LANG", "TMPDIR", "PWD", "GREETING", "TRACEPARENT"),
        *("STELLA_RUN_ID", "STELLA_STEP_ID", "STELLA_ATTEMPT"),
    }


@pytest.mark.parametrize("cwd", ["/", "/etc", "../..", "/work/../tmp", "/workshop"])
async def test_cwd_outside_the_work_dir_is_refused(plugin: ScriptPlugin, cwd: str) -> None:
    error = await fail(plugin, ["pwd"], cwd=cwd)
    assert (error.code, error.retryable) == ("PARAMS_INVALID", False)


# --- network --------------------------------------------------------------------------
async def test_no_network_without_an_allowlist(plugin: ScriptPlugin, listener: int) -> None:
    connect = (
        "import socket, sys\n"
        "for host in sys.argv[1:]:\n"
        "    try:\n"
        f"        socket.create_connection((host, {listener}), timeout=2)\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as exc:\n"
        "        print('refused', host, exc)\n"
    )
    targets = ["127.0.0.1", *_host_addresses()]
    for host in targets:  # the control: from the host's namespace the server is reachable
        socket.create_connection((host, listener), timeout=2).close()
    result = await run(plugin, ["/usr/bin/python3", "-c", connect, *targets])
    assert "CONNECTED" not in result.logs
    assert sum(line.startswith("refused ") for line in result.logs.splitlines()) == len(targets)


def _host_addresses() -> list[str]:
    """The host's own non-loopback IPv4 addresses (reachable from the host's namespace)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos if not str(info[4][0]).startswith("127.")})


# --- resources ------------------------------------------------------------------------
async def test_memory_beyond_the_limit_is_resource_limit_exceeded(plugin: ScriptPlugin) -> None:
    grab = "x = bytearray(300 * 1024 * 1024); print('GOT IT')"
    error = await fail(plugin, ["/usr/bin/python3", "-c", grab], resources={"memoryMb": 64})
    assert (error.code, error.retryable) == ("RESOURCE_LIMIT_EXCEEDED", False)
    assert "memory limit of 64 MB" in error.message
    assert "GOT IT" not in error.logs


async def test_cpu_beyond_the_limit_is_resource_limit_exceeded(plugin: ScriptPlugin) -> None:
    started = time.monotonic()
    error = await fail(plugin, "while :; do :; done", resources={"cpuSeconds": 1})
    assert time.monotonic() - started < 6
    assert (error.code, error.retryable) == ("RESOURCE_LIMIT_EXCEEDED", False)
    assert "CPU-time limit of 1 s" in error.message


async def test_a_setsid_background_process_does_not_outlive_the_step(
    plugin: ScriptPlugin, uid: int
) -> None:
    result = await run(plugin, "setsid sleep 300 > /dev/null 2>&1 & nohup sleep 301 & echo up")
    assert "up" in result.logs
    await assert_no_process_left(uid)


async def test_cancel_kills_the_whole_sandbox(plugin: ScriptPlugin, uid: int) -> None:
    command = "setsid sleep 300 & (trap '' TERM; sleep 302) & echo started; sleep 303"
    task = asyncio.create_task(run(plugin, command))
    # No event tells when the step's processes exist: poll /proc for them (as root).
    for _ in range(500):
        if len(processes_of(uid)) >= 4 or os.geteuid() != 0:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_no_process_left(uid)


async def test_fork_bomb_is_bounded_and_cleaned_up(plugin: ScriptPlugin, uid: int) -> None:
    started = time.monotonic()
    with pytest.raises(StepFailed):  # whichever way it ends, it is a failure of the step
        await plugin.run(ctx("bomb() { bomb | bomb & }; bomb; sleep 1; exit 1"))
    assert time.monotonic() - started < 20
    await assert_no_process_left(uid)


@pytest.mark.parametrize("where", ["/work/fill", "/tmp/fill"])
async def test_filling_the_disk_stops_at_the_cap(plugin: ScriptPlugin, where: str) -> None:
    error = await fail(plugin, f"head -c 40M /dev/zero > {where}")
    assert (error.code, error.retryable) == ("RESOURCE_LIMIT_EXCEEDED", False)
    assert "disk space" in error.message


async def test_a_file_larger_than_the_file_size_limit_is_refused(
    uid: int,
) -> None:
    limits = Limits(10, 512, 64, 256, 1, 8, 16)
    sandbox = Sandbox(SandboxConfig(uid=uid, gid=uid, defaults=limits, ceiling=limits))
    error = await fail(ScriptPlugin(sandbox=sandbox), "head -c 2M /dev/zero > /work/big")
    assert error.code == "RESOURCE_LIMIT_EXCEEDED"
    assert "file-size limit of 1 MB" in error.message


async def test_a_step_cannot_raise_its_limits_above_the_operator_ceiling(
    plugin: ScriptPlugin,
) -> None:
    result = await run(plugin, "ulimit -t; ulimit -v", resources={"cpuSeconds": 10**6})
    cpu, memory = result.logs.split()
    assert int(cpu) == SMALL.cpu_seconds
    assert int(memory) == SMALL.memory_mb * 1024


# --- when bubblewrap is missing -------------------------------------------------------
async def test_without_bubblewrap_steps_fail_with_sandbox_unavailable() -> None:
    sandbox = Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap"))
    error = await fail(ScriptPlugin(sandbox=sandbox), ["true"])
    assert (error.code, error.retryable) == ("SANDBOX_UNAVAILABLE", False)
    status = sandbox.status()
    assert (status.mode, status.available) == ("on", False)
    assert "not installed" in status.reason
