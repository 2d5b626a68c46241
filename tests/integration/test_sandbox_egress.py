"""A step with a `network` allowlist reaches the listed hosts and nothing else (real bubblewrap).

Two HTTP servers run on the host's loopback; only one is listed. From inside the sandbox the
listed one answers through the egress proxy (plain HTTP and CONNECT), the other is refused by
the proxy and cannot be reached directly either.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from stellaorch.plugins import ScriptPlugin, StepContext
from stellaorch.plugins.sandbox import Limits, Sandbox, SandboxConfig

pytestmark = pytest.mark.usefixtures("require_sandbox")

LIMITS = Limits(
    cpu_seconds=20, memory_mb=512, processes=64, open_files=256, file_size_mb=16, tmp_mb=8,
    work_mb=16,
)  # fmt: skip

FETCH = """
import sys, urllib.request
for url in sys.argv[1:]:
    try:
        print("GOT", urllib.request.urlopen(url, timeout=5).read().decode())
    except Exception as exc:
        print("FAILED", url, exc)
"""

RAW = """
import socket, sys
target, port = sys.argv[1], int(sys.argv[2])
def ask(first):
    s = socket.create_connection((target, port), timeout=5)
    s.sendall(first)
    return s, s.recv(4096).decode(errors="replace")
try:
    socket.create_connection((target, int(sys.argv[3])), timeout=2)
    print("DIRECT CONNECTED")
except OSError as exc:
    print("DIRECT FAILED", exc)
for upstream in sys.argv[3:]:
    s, answer = ask(f"CONNECT 127.0.0.1:{upstream} HTTP/1.1\\r\\n\\r\\n".encode())
    print("CONNECT", upstream, answer.splitlines()[0])
    if " 200 " in answer:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        print("TUNNEL", s.recv(4096).decode().split("\\r\\n\\r\\n", 1)[1])
"""


@pytest.fixture
def plugin() -> ScriptPlugin:
    """The sandboxed script plugin, as a uid of its own when the tests run as root."""
    uid = random.randrange(200_000, 2_000_000)
    config = SandboxConfig(uid=uid, gid=uid, defaults=LIMITS, ceiling=LIMITS)
    return ScriptPlugin(sandbox=Sandbox(config), kill_grace_seconds=0.5)


async def _hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    port = writer.get_extra_info("sockname")[1]
    writer.write(f"HTTP/1.0 200 OK\r\n\r\nhello-from-{port}".encode())
    await writer.drain()
    writer.close()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int]]:
    """Two HTTP servers on the host's loopback: (listed port, unlisted port)."""
    started = [await asyncio.start_server(_hello, "127.0.0.1", 0) for _ in range(2)]
    try:
        ports = [s.sockets[0].getsockname()[1] for s in started]
        yield ports[0], ports[1]
    finally:
        for server in started:
            server.close()
            await server.wait_closed()


def ctx(command: list[str], network: list[str]) -> StepContext:
    """One attempt of `command` with the allowlist `network`."""
    return StepContext(
        tenant="acme", run_id="run-1", dag_id="dag", step_id="egress", attempt=1,
        params={"command": command}, timeout_seconds=30.0,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736", network=network,
    )  # fmt: skip


async def logs_of(plugin: ScriptPlugin, command: list[str], network: list[str]) -> str:
    """Run the step (it must succeed) and return its log."""
    result = await plugin.run(ctx(command, network))
    return result.logs


async def test_only_the_listed_host_answers_over_http(
    plugin: ScriptPlugin, servers: tuple[int, int]
) -> None:
    listed, unlisted = servers
    urls = [f"http://127.0.0.1:{listed}/", f"http://127.0.0.1:{unlisted}/"]
    logs = await logs_of(plugin, ["/usr/bin/python3", "-c", FETCH, *urls], [f"127.0.0.1:{listed}"])
    assert f"GOT hello-from-{listed}" in logs
    assert f"hello-from-{unlisted}" not in logs
    assert f"FAILED http://127.0.0.1:{unlisted}/ HTTP Error 403" in logs


async def test_connect_tunnels_only_to_listed_hosts_and_direct_connects_fail(
    plugin: ScriptPlugin, servers: tuple[int, int]
) -> None:
    listed, unlisted = servers
    command = ["/usr/bin/python3", "-c", RAW, "127.0.0.1", "3128", str(listed), str(unlisted)]
    logs = await logs_of(plugin, command, [f"127.0.0.1:{listed}"])
    assert "DIRECT FAILED" in logs and "DIRECT CONNECTED" not in logs
    assert f"CONNECT {listed} HTTP/1.1 200" in logs
    assert f"TUNNEL hello-from-{listed}" in logs
    assert f"CONNECT {unlisted} HTTP/1.1 403" in logs
    assert f"hello-from-{unlisted}" not in logs


async def test_a_bare_host_means_ports_80_and_443_only(
    plugin: ScriptPlugin, servers: tuple[int, int]
) -> None:
    listed, _ = servers
    logs = await logs_of(
        plugin, ["/usr/bin/python3", "-c", FETCH, f"http://127.0.0.1:{listed}/"], ["127.0.0.1"]
    )
    assert "HTTP Error 403" in logs and "hello-from" not in logs


async def test_exit_status_and_missing_programs_pass_through_the_forwarder(
    plugin: ScriptPlugin,
) -> None:
    from stellaorch.domain.errors import StepFailed

    with pytest.raises(StepFailed) as failed:
        await plugin.run(ctx(["/bin/sh", "-c", "exit 7"], ["example.org"]))
    assert failed.value.code == "SCRIPT_EXIT_NONZERO" and "7" in failed.value.message
    with pytest.raises(StepFailed) as missing:
        await plugin.run(ctx(["/nonexistent/tool"], ["example.org"]))
    assert missing.value.code == "SCRIPT_NOT_FOUND"
