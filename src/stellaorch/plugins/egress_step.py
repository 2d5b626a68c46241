"""A step's network inside the sandbox: none, or only the hosts its `network` lists.

The sandbox's network namespace has loopback only. For a step with an allowlist the worker
runs an `EgressProxy` on a Unix socket bound into the sandbox, and the step's command starts
behind a small forwarder that offers that socket as an HTTP proxy on 127.0.0.1 and sets the
usual `*_PROXY` variables; anything not listed is refused by the proxy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

_SOCKET_DIR_IN_SANDBOX = "/run/stella-egress"


@dataclass(frozen=True)
class StepNetwork:
    """What the sandbox launch adds for the step's network: binds, argv prefix, env."""

    binds: list[tuple[str, str]] = field(default_factory=list)
    ro_binds: list[tuple[str, str]] = field(default_factory=list)
    argv_prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def step_network(
    allow: Sequence[str], *, owner: tuple[int, int] | None = None
) -> AsyncIterator[StepNetwork]:
    """No network for an empty allowlist; otherwise an egress proxy for the attempt's life."""
    if not allow:
        yield StepNetwork()
        return
    from stellaorch.plugins.egress import EgressProxy
    from stellaorch.plugins.egress_forward import forwarder_launch

    directory = tempfile.mkdtemp(prefix="stella-egress-")
    try:
        if owner is not None:
            os.chown(directory, *owner)
        socket_path = os.path.join(directory, "proxy.sock")
        uid = owner[0] if owner is not None else None
        async with EgressProxy(list(allow), socket_path, socket_uid=uid):
            launch = forwarder_launch(f"{_SOCKET_DIR_IN_SANDBOX}/proxy.sock")
            yield StepNetwork(
                binds=[(directory, _SOCKET_DIR_IN_SANDBOX)],
                ro_binds=list(launch.binds),
                argv_prefix=list(launch.argv_prefix),
                env=dict(launch.env),
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
