"""The worker: lease due steps, run their plugins under a timeout, heartbeat, report outcomes.

Claims and completions are batched: one claim transaction leases as many steps as there are
free slots, and every outcome that arrives while a completion transaction is in flight is
written by the next one. Tasks of a run that was cancelled or failed are cancelled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import structlog
from opentelemetry import trace

from stellaorch.domain.errors import StellaError, StepFailed, StoreUnavailable
from stellaorch.domain.ledger import RUN_STOPPED, EntryType, LedgerEntry
from stellaorch.domain.providers import worker_identity
from stellaorch.domain.status import AttemptStatus
from stellaorch.engine import claim, complete, recover
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.live_log import LiveLog
from stellaorch.engine.redact_outcome import redacted
from stellaorch.engine.requests import Lease, Outcome
from stellaorch.engine.spans import step_span
from stellaorch.engine.step_metrics import AttemptProbe
from stellaorch.engine.workers import WorkerRegistry, presence
from stellaorch.plugins.base import PluginRegistry, StepContext, attempt_span_id, check_outputs
from stellaorch.store.notify import Topic
from stellaorch.store.retries import outlast

log = logging.getLogger("stellaorch.worker")

_WAKES = frozenset({EntryType.STEP_QUEUED, EntryType.STEP_RETRYING})
# Subscribes to the store's notifications on the worker's loop; returns the unsubscribe.
Listen = Callable[[asyncio.AbstractEventLoop], Callable[[], None]]


@dataclass
class _Slot:
    lease: Lease
    task: asyncio.Task[None]


class Worker:
    """Executes leased steps with bounded concurrency until `stop` is called."""

    def __init__(
        self,
        env: EngineEnv,
        plugins: PluginRegistry,
        *,
        worker_id: str | None = None,
        concurrency: int | None = None,
        listeners: Sequence[Listen] = (),
    ) -> None:
        self.env = env
        # Started after the worker's own WORK subscription (which starts the listen thread).
        self._listeners = tuple(listeners)
        self.plugins = plugins
        self.worker_id = worker_id or worker_identity()
        self.concurrency = concurrency or env.settings.worker_concurrency
        self._slots: dict[str, _Slot] = {}
        self._outcomes: list[Outcome] = []
        self._wake = asyncio.Event()
        # Set when slots or reservations come back: what a claim loop without room waits for.
        self._room = asyncio.Event()
        self._outcome_ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._rotation = 0
        self._reserved = 0
        self._quiet = False
        self.registry = WorkerRegistry(env)
        # The registry's key: host:pid as on the leases, plus a suffix for several per process.
        self.registry_id = f"{self.worker_id}:{env.ids.lease_id()[:8]}"
        self._beat: asyncio.Future[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        """Work until `stop()`; then finish or release in-flight attempts and return."""
        unsubscribe = self.env.bus.subscribe(self._on_entry)
        on_work = self._on_notified(asyncio.get_running_loop())
        unlisten = self.env.notifier.subscribe(Topic.WORK, on_work)
        unlisten_others = [listen(asyncio.get_running_loop()) for listen in self._listeners]
        loops = [
            _resilient(self._claim_loop, self._stopping),
            self._complete_loop(),
            _resilient(self._maintenance_loop, self._stopping),
        ]
        tasks = [asyncio.create_task(c) for c in loops]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in tasks if t.done() and t.exception() is not None]
            if crashed:
                self.stop()
                for task in tasks:
                    task.cancel()
                raise crashed[0].exception()  # type: ignore[misc]
            await self._drain(tasks)
        finally:
            stopping.cancel()
            await self._leave_registry()
            unsubscribe()
            unlisten()
            for remove in unlisten_others:
                remove()

    def stop(self) -> None:
        """Ask the worker to stop taking work."""
        self._stopping.set()
        self._wake.set()
        self._room.set()

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        claim_loop, complete_loop, maintenance = tasks
        await claim_loop
        maintenance.cancel()
        leftover = [s.lease.lease_id for s in self._slots.values()]
        for slot in list(self._slots.values()):
            slot.task.cancel()
        await asyncio.gather(*(s.task for s in list(self._slots.values())), return_exceptions=True)
        self._outcome_ready.set()
        await complete_loop
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        if leftover:
            entries = await self.env.db.transact(lambda c: recover.recover(c, self.env, leftover))
            self.env.bus.publish(entries)

    def _on_notified(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """A NOTIFY callback (listen thread): another process committed work, claim now."""

        def wake() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._wake.set)

        return wake

    def _on_entry(self, entry: LedgerEntry) -> None:
        if entry.entry_type in _WAKES and not self._quiet:
            self._wake.set()
        elif entry.entry_type in RUN_STOPPED:
            for slot in list(self._slots.values()):
                if slot.lease.run_id == entry.run_id:
                    slot.task.cancel()

    # -- claiming ------------------------------------------------------------------------
    def _reserve(self) -> int:
        """Book free slots for a claim so concurrent claims never oversubscribe."""
        free = self.concurrency - len(self._slots) - self._reserved
        n = max(0, min(free, self.env.settings.claim_batch))
        self._reserved += n
        return n

    def _take(self, leases: list[Lease], reserved: int, entries: list[LedgerEntry]) -> None:
        """Start claimed leases and return the reservation."""
        self._unreserve(reserved)
        self._rotation += 1
        self._publish_own(entries)
        for lease in leases:
            self._start(lease)

    def _unreserve(self, reserved: int) -> None:
        self._reserved -= reserved
        self._room.set()

    def _publish_own(self, entries: list[LedgerEntry]) -> None:
        """Announce our own entries without waking our claim loop (we just looked)."""
        self._quiet = True
        try:
            self.env.bus.publish(entries)
        finally:
            self._quiet = False

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            limit = self._reserve()
            if limit == 0:
                # Every slot is busy or booked by a completion's claim. Waiting for a wake
                # here would spin: a pending wake is for the next claim, so it stays set.
                self._room.clear()
                await self._wait_for(self._room)
                continue
            self._wake.clear()
            try:
                claimed = await self.env.db.transact(
                    partial(
                        claim.claim,
                        env=self.env,
                        worker_id=self.worker_id,
                        limit=limit,
                        rotation=self._rotation,
                    )
                )
            except BaseException:
                self._unreserve(limit)
                raise
            self._take(claimed.leases, limit, claimed.entries)
            if len(claimed.leases) < limit:
                await self._wait_for(self._wake, claimed.next_due_us)

    async def _wait_for(self, event: asyncio.Event, next_due_us: int | None = None) -> None:
        """Until `event` is set, the next due time, or the poll interval, whichever is first."""
        timeout = self.env.settings.poll_interval_seconds
        if next_due_us is not None:
            due_in = (next_due_us - self.env.clock.now_us()) / 1_000_000
            timeout = max(0.0, min(timeout, due_in))
        if event.is_set():
            return
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, and
        # each extra hop lets every other ready callback run before this worker claims.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    def _start(self, lease: Lease) -> None:
        task = asyncio.create_task(self._execute(lease))
        self._slots[lease.lease_id] = _Slot(lease, task)

    # -- executing -----------------------------------------------------------------------
    async def _execute(self, lease: Lease) -> None:
        live = LiveLog(self.env, lease)
        # This task's own context: every line it logs names the attempt.
        structlog.contextvars.bind_contextvars(
            tenant=lease.tenant,
            dag_id=lease.dag_id,
            run_id=lease.run_id,
            step_id=lease.step_id,
            attempt=lease.attempt,
            trace_id=lease.trace_id,
        )
        try:
            with step_span(
                lease, attempt_span_id(lease.run_id, lease.step_id, lease.attempt)
            ) as span:
                try:
                    outcome = redacted(await self._measured(lease, live))
                except asyncio.CancelledError:
                    span.set_attribute("outcome", "cancelled")
                    raise
                span.set_attribute("outcome", str(outcome.status))
                if outcome.plugin:
                    span.set_attribute("plugin", _plugin_label(outcome.plugin, lease))
                if outcome.status != AttemptStatus.SUCCEEDED:
                    span.set_status(trace.StatusCode.ERROR, (outcome.error or {}).get("code"))
        except asyncio.CancelledError:
            self._room.set()  # no outcome follows, so no completion claims for this slot
            # Run cancelled, lease revoked, or shutdown: the store already knows; what the
            # attempt printed is kept all the same.
            await live.close()
            return
        finally:
            self._slots.pop(lease.lease_id, None)
        if outcome.logs:
            await live.discard()
        else:
            await live.close()  # timed out or crashed: the live chunks are its log
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    async def _measured(self, lease: Lease, live: LiveLog) -> Outcome:
        """`_attempt`, with its wall time, output bytes and process usage attached."""
        probe = AttemptProbe(live.feed)
        outcome = await self._attempt(lease, probe)
        if lease.problem is not None:
            return outcome  # it never ran
        name = str(outcome.plugin.get("name")) if outcome.plugin else lease.step.plugin
        metrics = probe.metrics(outcome.logs, outcome.outputs, name)
        return replace(outcome, metrics=metrics)

    async def _attempt(self, lease: Lease, live: AttemptProbe) -> Outcome:
        if lease.problem is not None:
            return _failure(lease, lease.problem.code, lease.problem.message, False)
        plugin: dict[str, Any] | None = None  # the identity, once the plugin is loaded
        try:
            async with asyncio.timeout(lease.step.timeout_seconds):
                resolved = await self.plugins.load(lease.step.plugin, lease.tenant)
                plugin = resolved.identity.as_json()
                result = await resolved.plugin.run(self._context(lease, live))
            outputs = check_outputs(result.outputs)
        except TimeoutError:
            message = f"step exceeded its timeout of {lease.step.timeout_seconds:g}s"
            status = AttemptStatus.TIMED_OUT
            return _failure(lease, "STEP_TIMED_OUT", message, True, status, plugin=plugin)
        except StepFailed as exc:
            logs = exc.logs
            return _failure(lease, exc.code, exc.message, exc.retryable, logs=logs, plugin=plugin)
        except StellaError as exc:
            return _failure(lease, exc.code, exc.message, exc.retryable, plugin=plugin)
        except Exception as exc:  # a plugin bug must fail the attempt, not the worker
            log.exception("plugin crashed", extra={"run_id": lease.run_id})
            message = f"{type(exc).__name__}: {exc}"
            return _failure(lease, "PLUGIN_CRASHED", message, True, plugin=plugin)
        return Outcome(lease, AttemptStatus.SUCCEEDED, outputs, result.logs, plugin=plugin)

    def _context(self, lease: Lease, probe: AttemptProbe) -> StepContext:
        return StepContext(
            tenant=lease.tenant,
            run_id=lease.run_id,
            dag_id=lease.dag_id,
            step_id=lease.step_id,
            attempt=lease.attempt,
            params=lease.params,
            timeout_seconds=lease.step.timeout_seconds,
            trace_id=lease.trace_id,
            network=tuple(lease.step.network),
            resources=dict(lease.step.resources or {}),
            secrets=lease.secrets.values,
            log_sink=probe.feed,
            usage_sink=probe.report_usage,
        )

    # -- completing ----------------------------------------------------------------------
    async def _complete_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._outcomes = self._outcomes, []
            if batch:
                # Outcomes are not lost: the batch is reported again until the store takes it.
                await outlast(
                    partial(self._complete, batch), outage=StoreUnavailable, on_retry=_log_outage
                )
            if self._stopping.is_set() and not self._slots and not self._outcomes:
                return

    async def _complete(self, batch: list[Outcome]) -> None:
        """Report outcomes and, in the same transaction, lease work for the freed slots."""
        limit = 0 if self._stopping.is_set() else self._reserve()
        try:
            done, claimed = await self.env.db.transact(
                partial(
                    complete.complete_and_claim,
                    env=self.env,
                    outcomes=batch,
                    worker_id=self.worker_id,
                    limit=limit,
                    rotation=self._rotation,
                )
            )
        except BaseException:
            self._unreserve(limit)
            raise
        self._publish_own(done.entries)
        self._take(claimed.leases, limit, claimed.entries)
        if len(claimed.leases) == limit:
            # Either the queue may hold more than we had room for, or the claim loop held
            # the free slots (limit 0) and may have looked before our successors were queued.
            self._wake.set()
        elif claimed.next_due_us is not None:
            self._wake_at(claimed.next_due_us)

    def _wake_at(self, due_us: int) -> None:
        """Wake the claim loop when a retry's backoff ends."""
        delay = max(0.0, (due_us - self.env.clock.now_us()) / 1_000_000)
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    # -- heartbeats and recovery ---------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        while True:
            await self._recover_expired()
            await self._announce()
            await asyncio.sleep(self.env.settings.heartbeat_seconds)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        held = list(self._slots)
        if not held:
            return
        alive = await self.env.db.transact(lambda c: recover.heartbeat(c, self.env, held))
        for lease_id in set(held) - alive:
            slot = self._slots.get(lease_id)
            if slot is not None:
                slot.task.cancel()  # revoked elsewhere (cancel, expiry): stop the attempt

    async def _announce(self) -> None:
        """Heartbeat the registry row, idle or busy, so `worker list` and health see us."""
        tenants = tuple(self.env.settings.worker_tenants)
        row = presence(self.registry_id, tenants, self.concurrency, len(self._slots))
        # Shielded: a stop must not cut the write loose, or it could land after our leave.
        self._beat = asyncio.ensure_future(self.registry.beat(row))
        await asyncio.shield(self._beat)

    async def _leave_registry(self) -> None:
        """Remove our row (best effort: a row left behind expires with the TTL)."""
        if self._beat is not None:
            await asyncio.gather(self._beat, return_exceptions=True)
        try:
            await self.registry.leave(self.registry_id)
        except StellaError as exc:
            log.warning("could not leave the worker registry: %s", exc.message)

    async def _recover_expired(self) -> None:
        entries = await self.env.db.transact(lambda c: recover.recover(c, self.env))
        if entries:
            self.env.bus.publish(entries)
            self._wake.set()


async def _resilient(loop: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> None:
    """Keep a loop alive through store outages (locked or unreachable), with backoff."""
    await outlast(loop, outage=StoreUnavailable, until=stopping, on_retry=_log_outage)


def _log_outage(exc: BaseException, delay: float) -> None:
    message = exc.message if isinstance(exc, StellaError) else str(exc)
    log.warning("store unavailable, retrying in %.2fs: %s", delay, message)


def _plugin_label(identity: Mapping[str, Any], lease: Lease) -> str:
    """`name@version` of the plugin that ran (the step's reference when it has no version)."""
    name, version = identity.get("name"), identity.get("version")
    return f"{name}@{version}" if name and version else lease.step.plugin


def _failure(
    lease: Lease,
    code: str,
    message: str,
    retryable: bool,
    status: AttemptStatus = AttemptStatus.FAILED,
    logs: str = "",
    plugin: dict[str, Any] | None = None,
) -> Outcome:
    error = {"code": code, "message": message, "retryable": retryable}
    return Outcome(lease, status, None, logs, error, plugin)
