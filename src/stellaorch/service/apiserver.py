"""The HTTP API served by uvicorn in the service's event loop, on the process's one engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn

from stellaorch.api.app import create_app, create_metrics_app
from stellaorch.console.site import mount as mount_console
from stellaorch.domain.errors import ServiceFailed
from stellaorch.engine.app import Orchestrator
from stellaorch.observability.redaction import redact_server_loggers
from stellaorch.service.embedded import ended_because, watch_task
from stellaorch.service.httpguard import ServerConfig
from stellaorch.settings import Settings

T = TypeVar("T")
# Open connections (a stream follower) get this long to finish after a stop is requested.
GRACEFUL_SECONDS = 5
# A stream client never needs to send more than a ping; uvicorn's default is 16 MiB.
WS_MAX_MESSAGE_BYTES = 64 * 1024


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals alone (uvicorn's would replace ours and re-raise them on exit)."""
        yield


def listen(host: str, port: int) -> socket.socket:
    """A bound listening socket; failing here gives a clear error instead of uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only turns Nagle off (TCP_NODELAY) on accepted sockets whose
    # proto is IPPROTO_TCP; with proto 0 every keep-alive response waits ~40 ms for an ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServiceFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class ApiServer:
    """A running API server the service can watch and stop."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
        self.server = server
        self.task = task
        self.url = url
        self._crash_reported = False

    @classmethod
    async def start(
        cls, orchestrator: Orchestrator, settings: Settings, *, metrics_only: bool = False
    ) -> ApiServer:
        """Bind, start serving and return once requests are accepted.

        `metrics_only`: just `/metrics` on `metrics_port`, for a worker or scheduler process.
        """
        if metrics_only:
            assert settings.metrics_port is not None
            app, port = create_metrics_app(orchestrator), settings.metrics_port
        else:
            app, port = mount_console(create_app(orchestrator)), settings.api_port
        sock = listen(settings.api_host, port)
        # the access log would print `?access_token=...` of every stream URL
        redact_server_loggers()
        _server_logs_to_root()
        server = _EmbeddedServer(server_config(app, settings))
        task = asyncio.create_task(_serve(server, sock))
        url = f"http://{_url_host(settings.api_host)}:{sock.getsockname()[1]}"
        api = cls(server, task, url)
        await api._started()
        return api

    async def _started(self) -> None:
        """Wait for uvicorn's startup (lifespan and listener) to finish."""
        while not self.server.started:
            if self.task.done():
                self._crash_reported = True
                raise self._crash()
            await asyncio.sleep(0.01)

    async def watch(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, unless the server stops first: then raise ServiceFailed."""
        return await watch_task(self.task, work, self._reported_crash)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (bounded), run the app's shutdown."""
        self.server.should_exit = True
        try:
            await self.task
        except Exception as exc:
            if not self._crash_reported:
                raise self._crash() from exc

    def _reported_crash(self) -> ServiceFailed:
        self._crash_reported = True
        return self._crash()

    def _crash(self) -> ServiceFailed:
        return ServiceFailed(f"the API server stopped unexpectedly: {ended_because(self.task)}")


def _server_logs_to_root() -> None:
    """Send uvicorn's records to the root logger: our JSON lines, whoever configured it before."""
    # An earlier uvicorn.Config with its default log_config (an embedding program's, a test's)
    # leaves these loggers with their own handlers and propagate=False: our lines would vanish.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn as the service runs it: our logging, and bounds on what a client controls."""
    return ServerConfig(
        app,
        header_timeout_seconds=settings.api_header_timeout_seconds,
        h11_max_incomplete_event_size=settings.api_max_header_bytes,
        limit_concurrency=settings.api_max_connections,
        timeout_keep_alive=settings.api_keep_alive_seconds,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        # Deflate state is per connection: with it, each event is compressed once per
        # subscriber (41 % of the loop in a 300-client burst); without, one text goes to all.
        ws_per_message_deflate=False,
        log_config=None,  # records go to the root logger: our JSON lines
        # One access line per request is the API's own structured `request` line (route
        # template, status, durationMs, traceId); uvicorn's free-text one would double it.
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run uvicorn on an already bound socket; its startup `sys.exit` becomes an error."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        raise ServiceFailed(f"the API server failed to start (uvicorn exit {exc.code})") from None
    finally:
        sock.close()


def _url_host(host: str) -> str:
    """The host as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host
