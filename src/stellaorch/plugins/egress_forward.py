"""Inside the sandbox: offer the egress proxy's Unix socket as an HTTP proxy on loopback.

Runs as the program of a step that has a `network` allowlist: it listens on
127.0.0.1:3128 in the step's own network namespace, forwards every connection to the proxy
socket bound into the sandbox, and runs the step's command as its child with the usual
`*_PROXY` variables, exiting with the command's status. It runs with the system's Python
inside the sandbox, so it uses the standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

PROXY_PORT = 3128  # inside the step's own network namespace: no other process shares it
SCRIPT_IN_SANDBOX = "/run/stella-egress-forward.py"
PYTHON = "/usr/bin/python3"
EXEC_FAILED = "stella-egress: failed to execute"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ForwarderLaunch:
    """What a sandbox launch adds to run a command behind the forwarder."""

    binds: list[tuple[str, str]] = field(default_factory=list)
    argv_prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def forwarder_launch(socket_in_sandbox: str) -> ForwarderLaunch:
    """The read-only bind of this file, the argv prefix and the proxy variables."""
    url = f"http://127.0.0.1:{PROXY_PORT}"
    proxy_env = {name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return ForwarderLaunch(
        binds=[(str(Path(__file__).resolve()), SCRIPT_IN_SANDBOX)],
        argv_prefix=[PYTHON, "-I", "-S", SCRIPT_IN_SANDBOX, socket_in_sandbox, "--"],
        env={**proxy_env, "ALL_PROXY": url, "NO_PROXY": "", "no_proxy": ""},
    )


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction, then half-close the target."""
    try:
        while data := source.recv(_CHUNK):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _serve(listener: socket.socket, socket_path: str) -> None:
    """Accept loopback connections forever, each joined to a new proxy socket connection."""
    while True:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(socket_path)
        except OSError:
            client.close()
            upstream.close()
            continue
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(source, target), daemon=True).start()


def main(argv: list[str]) -> int:
    """`forward SOCKET -- COMMAND…`: listen, run COMMAND, return its exit status."""
    socket_path, separator, command = argv[0], argv[1], argv[2:]
    if separator != "--" or not command:
        print("usage: egress_forward SOCKET -- COMMAND...", file=sys.stderr)
        return 2
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", PROXY_PORT))
    listener.listen(64)
    threading.Thread(target=_serve, args=(listener, socket_path), daemon=True).start()
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"{EXEC_FAILED} {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda sig, _frame: child.send_signal(sig))
    status = child.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main(sys.argv[1:]))
