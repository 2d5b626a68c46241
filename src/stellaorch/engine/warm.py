"""`POST /admin/warm`: every process refreshes its caches, through a list of named warmers.

A warmer takes the tenants to warm (None: all) and returns figures of what it loaded. The
engine registers `secrets` and `bundles` (verified bundles, re-checked from disk); other
caches add theirs with `add`. The
process that receives the request warms at once and reports; on PostgreSQL it also sends a
NOTIFY on the `warm` topic, and every other process's worker warms when it hears it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from stellaorch.domain.audit import Operator
from stellaorch.domain.providers import worker_identity
from stellaorch.engine.bundles import BundleStore
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.records import record_audit
from stellaorch.store import Connection
from stellaorch.store import warm as warm_reports
from stellaorch.store.notify import Topic, notify_committed

log = logging.getLogger("stellaorch.warm")
REPORT_WAIT_SECONDS = 2.0
REPORT_QUIET_SECONDS = 0.3
REPORT_POLL_SECONDS = 0.05

Warmer = Callable[[list[str] | None], Awaitable[dict[str, Any]]]


class Warming:
    """The warmers of one process, by name, run in the order they were added."""

    def __init__(self, env: EngineEnv, identity: str | None = None) -> None:
        self.env = env
        self.identity = identity or worker_identity()
        self._warmers: dict[str, Warmer] = {"secrets": self._warm_secrets}
        if isinstance(env.bundles, BundleStore):  # a test's fake source has nothing cached
            self._warmers["bundles"] = env.bundles.warm

    def add(self, name: str, warmer: Warmer) -> None:
        """Register another cache's warmer (e.g. `bundles`); a name is added once."""
        if name in self._warmers:
            raise ValueError(f"a warmer named {name!r} is already registered")
        self._warmers[name] = warmer

    @property
    def names(self) -> list[str]:
        """The registered warmers' names."""
        return list(self._warmers)

    async def warm_here(self, tenants: Iterable[str] | None) -> dict[str, Any]:
        """Run every warmer in this process; what each loaded, under this process's identity."""
        chosen = None if tenants is None else sorted(set(tenants))
        warmed = {name: await warmer(chosen) for name, warmer in self._warmers.items()}
        log.info("caches.warmed", extra={"worker": self.identity, "warmed": warmed})
        return {"worker": self.identity, "warmed": warmed}

    async def warm(self, tenant: str, operator: Operator) -> dict[str, Any]:
        """Warm here for `tenant`, tell every other process (PostgreSQL), audit `admin.warm`."""
        here = await self.warm_here([tenant])

        def announce(conn: Connection) -> None:
            entry = operator.entry(tenant, "admin.warm", "caches", {"warmers": self.names})
            record_audit(conn, entry, self.env.clock.now_us())
            notify_committed(conn, Topic.WARM)

        since = self.env.clock.now_us()
        await self.env.db.transact(announce)
        others = await self._collect_reports(since) if self.env.notifier.enabled else []
        return {"workers": [here, *others], "notified": self.env.notifier.enabled}

    async def _collect_reports(self, since_us: int) -> list[dict[str, Any]]:
        """The other processes' reports of this warm (see the module docstring for timing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPORT_WAIT_SECONDS
        found: list[dict[str, Any]] = []
        last_new = deadline
        while loop.time() < deadline:
            await asyncio.sleep(REPORT_POLL_SECONDS)
            now = await self.env.db.read(lambda c: warm_reports.reports_since(c, since_us))
            if len(now) > len(found):
                found, last_new = now, loop.time()
            elif found and loop.time() - last_new >= REPORT_QUIET_SECONDS:
                break
        return found

    def listen(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Warm (every tenant) whenever another process asks; returns the unsubscribe."""
        tasks: set[asyncio.Task[Any]] = set()

        def start() -> None:
            task = loop.create_task(self._warm_quietly())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def heard() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(start)

        return self.env.notifier.subscribe(Topic.WARM, heard)

    async def _warm_quietly(self) -> None:
        try:
            report = await self.warm_here(None)
            now = self.env.clock.now_us()
            await self.env.db.transact(
                lambda c: warm_reports.record_report(c, self.identity, report["warmed"], now)
            )
        except Exception:  # a failed warm leaves the cache cold, never the worker down
            log.exception("caches.warm_failed")

    async def _warm_secrets(self, tenants: list[str] | None) -> dict[str, Any]:
        vault = self.env.vault
        return await self.env.db.read(lambda c: vault.warm(c, tenants))
