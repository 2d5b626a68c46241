"""The API as `serve` runs it (ApiServer: uvicorn with the service's configuration), in-process
on a fresh SQLite store and a free port, for tests that need real sockets and uvicorn's logs."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stellaorch.engine.app import Orchestrator
from stellaorch.security.keys import generate_key
from stellaorch.security.tokens import issue_token
from stellaorch.service.apiserver import ApiServer
from stellaorch.settings import Settings

BASE = "/api/v1/orchestrator"
TENANT = "acme"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Served:
    """A running API: its http:// base URL and a way to mint tokens it accepts."""

    url: str
    settings: Settings
    orchestrator: Orchestrator

    @property
    def ws_url(self) -> str:
        """The ws:// base URL of the API routes."""
        return self.url.replace("http://", "ws://", 1) + BASE

    def token(self, scopes: tuple[str, ...] = ("orchestrator:admin",)) -> str:
        """A token for TENANT signed by the server's key."""
        return issue_token(
            self.settings.keys_dir,
            subject="alice",
            tenants=[TENANT],
            scopes=list(scopes),
            audience=self.settings.audience,
        )


@contextlib.asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[Served]:
    """Start ApiServer on a fresh store; stop it and close the store on exit."""
    keys_dir = tmp_path / "keys"
    generate_key(keys_dir)
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'orchestrator.db'}",
        "keys_dir": keys_dir,
        "api_host": "127.0.0.1",
        "api_port": free_port(),
        **overrides,
    }
    settings = Settings(**values)
    orchestrator = Orchestrator.open(settings)
    try:
        server = await ApiServer.start(orchestrator, settings)
        try:
            yield Served(server.url, settings, orchestrator)
        finally:
            await server.stop()
    finally:
        await orchestrator.close()
