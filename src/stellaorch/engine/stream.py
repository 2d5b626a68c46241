"""Live run events: the ledger tailed in global order and fanned out to per-tenant subscribers.

The ledger is the event source; its global `id` is the event `seq`. Other processes write to
the same store without telling us, so the tailer reads the ledger's order (ids) from the store;
entries this process committed come with their contents on the in-process bus, and only the
others' are read in full. Each event is serialised once and the same text goes to every
subscriber. On SQLite the tail reads on a reader thread, never queueing behind the writer.

On PostgreSQL ids are drawn before commit, so a transaction can commit id 7 after id 8 is
visible. Every read here therefore first waits out the transactions that are between drawing
ledger ids and committing them (`await_ledger_appends`): what it reads is a final prefix, so
`last_seen` (or a replay's position) never passes an id that could still appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Callable
from functools import partial

from stellaorch.domain.ledger import LedgerEntry
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.stream_events import Event, StreamEvent, event_of, row_of
from stellaorch.engine.stream_events import StreamFilter as StreamFilter
from stellaorch.observability.tally import WindowTally
from stellaorch.store import Connection
from stellaorch.store.events import (
    LedgerRow,
    read_entries_between,
    read_max_id,
    read_positions_after,
    read_tenant_entries_after,
    snapshot_reads_are_final,
)
from stellaorch.store.notify import Topic

log = logging.getLogger("stellaorch.stream")

READ_BATCH = 1000  # rows per tail or replay read: bounds memory whatever the backlog
CARRIED_LIMIT = 10_000  # bus entries kept for the tail; older ones are read from the store
ChainKey = tuple[str, int]  # (run_id, seq): an entry's place in its run's chain


# -- subscriptions ------------------------------------------------------------------------
class StreamEnded(Exception):
    """The server ended a subscription; `code` and `reason` go into the WebSocket close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def slow_consumer() -> StreamEnded:
    """The end of a subscriber that fell `limit` events behind."""
    return StreamEnded(1013, "slow consumer")


def server_closing() -> StreamEnded:
    """The end of every subscriber when the hub shuts down."""
    return StreamEnded(1001, "server shutting down")


class Subscription:
    """One subscriber's bounded buffer of live events."""

    def __init__(self, where: StreamFilter, limit: int) -> None:
        self.where = where
        self.limit = limit
        self.end: StreamEnded | None = None
        self.ended = asyncio.Event()
        # Live events up to here were already sent by the replay (the resume handover).
        self.replayed_through = 0
        self._events: deque[StreamEvent] = deque()
        self._ready = asyncio.Event()

    @property
    def pending(self) -> int:
        """Events buffered and not yet taken."""
        return len(self._events)

    def offer(self, event: StreamEvent) -> bool:
        """Buffer an event; False (and the subscription ended) if the buffer is full."""
        if self.end is not None:
            return False
        if len(self._events) >= self.limit:
            self.finish(slow_consumer())
            return False
        self._events.append(event)
        self._ready.set()
        return True

    def finish(self, end: StreamEnded) -> None:
        """End the subscription and free its buffer."""
        if self.end is None:
            self.end = end
            self._events.clear()
            self.ended.set()
            self._ready.set()

    async def next(self) -> Event:
        """The next live event not already replayed; raises StreamEnded once ended."""
        return (await self.next_event()).fields

    async def next_event(self) -> StreamEvent:
        """Like `next`, with the event's message (shared by every subscriber, never copied)."""
        while True:
            if self.end is not None:
                raise self.end
            if self._events:
                event = self._events.popleft()
                if event.seq > self.replayed_through:
                    return event
                continue
            self._ready.clear()
            await self._ready.wait()


# -- what the bus carried -----------------------------------------------------------------
class CarriedEntries:
    """This process's committed entries, from the bus, until the tail learns their ids.

    Thread-safe (bus publishers may be on other threads) and bounded: past `limit` the oldest
    are dropped, and the tail reads those from the store like any other process's entries.
    """

    def __init__(self, limit: int = CARRIED_LIMIT) -> None:
        self._limit = limit
        self._entries: OrderedDict[ChainKey, LedgerEntry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: LedgerEntry) -> None:
        """Keep an entry that has just committed."""
        with self._lock:
            self._entries[(entry.run_id, entry.seq)] = entry
            if len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def take(self, keys: list[ChainKey]) -> dict[ChainKey, LedgerEntry]:
        """Remove and return the entries kept under these keys (the others are not here)."""
        with self._lock:
            found = {key: self._entries.pop(key) for key in keys if key in self._entries}
        return found

    def clear(self) -> None:
        """Forget every entry (the tail stopped)."""
        with self._lock:
            self._entries.clear()


def read_tail(conn: Connection, carried: CarriedEntries, after: int, limit: int) -> list[LedgerRow]:
    """The rows after `after` in global order: bus-carried contents where we have them."""
    positions = read_positions_after(conn, after, limit)
    found = carried.take([(p.run_id, p.seq) for p in positions])
    missing = [p.id for p in positions if (p.run_id, p.seq) not in found]
    stored = {}
    if missing:  # other processes' entries (or dropped ones): read their contents
        stored = {r.id: r for r in read_entries_between(conn, missing[0] - 1, missing[-1])}
    rows = []
    for p in positions:
        entry = found.get((p.run_id, p.seq))
        row = row_of(entry, p.id) if entry is not None else stored.get(p.id)
        if row is not None:  # None only if the entry was deleted since (ledger retention)
            rows.append(row)
    return rows


# -- the hub ------------------------------------------------------------------------------
class StreamHub:
    """One per process: tails the ledger while anyone listens and fans events out."""

    def __init__(self, env: EngineEnv, *, poll_seconds: float | None = None) -> None:
        self._env = env
        self._poll = poll_seconds or env.settings.poll_interval_seconds
        self._limit = env.settings.stream_queue_limit
        # A tail read never exceeds half a buffer, so a keeping-up subscriber never overflows.
        self._batch = min(READ_BATCH, max(1, self._limit // 2))
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_listening: Callable[[], None] | None = None
        self._stop_notified: Callable[[], None] | None = None
        self._carried = CarriedEntries()
        # Where a final prefix of the ledger can be read without queueing behind the writer.
        final = snapshot_reads_are_final(env.db.dialect)
        self._read = env.db.read if final else env.db.transact
        self.last_seen = 0
        # The stream delivery SLO's figures: events handed to subscribers, and those lost
        # when a slow consumer was cut off.
        self.delivery = WindowTally()

    @property
    def subscriber_count(self) -> int:
        """Live subscriptions, all tenants together."""
        return sum(len(subs) for subs in self._subscribers.values())

    @property
    def tailing(self) -> bool:
        """True while the tailer task runs."""
        return self._task is not None

    async def subscribe(self, where: StreamFilter) -> Subscription:
        """Register a subscriber; every entry committed after this returns reaches it."""
        subscription = Subscription(where, self._limit)
        self._subscribers[where.tenant].add(subscription)
        try:
            await self._ensure_tailing()
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a subscriber; the tailer stops with the last one."""
        tenant = subscription.where.tenant
        self._subscribers[tenant].discard(subscription)
        if not self._subscribers[tenant]:
            del self._subscribers[tenant]
        if not self._subscribers:
            self._stop_tailing()

    async def replay(self, subscription: Subscription, after: int) -> AsyncIterator[Event]:
        """The subscriber's stored events with seq > after, page by page, for a resume."""
        position = after
        subscription.replayed_through = max(subscription.replayed_through, after)
        while True:
            rows = await self._replay_page(subscription.where.tenant, position)
            if rows:
                position = rows[-1].id
                subscription.replayed_through = max(subscription.replayed_through, position)
            for row in rows:
                event = event_of(row)
                if subscription.where.matches(event):
                    yield event
            if len(rows) < READ_BATCH:
                return

    async def _replay_page(self, tenant: str, after: int) -> list[LedgerRow]:
        return await self._read(
            partial(read_tenant_entries_after, tenant=tenant, after=after, limit=READ_BATCH)
        )

    async def close(self) -> None:
        """Stop tailing and end every subscription (server shutdown)."""
        self._stop_tailing()
        for subs in list(self._subscribers.values()):
            for subscription in list(subs):
                subscription.finish(server_closing())
        self._subscribers.clear()

    # -- tailing --------------------------------------------------------------------------
    async def _ensure_tailing(self) -> None:
        async with self._lock:
            if self._task is not None:
                return
            self.last_seen = await self._read(read_max_id)
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._stop_listening = self._env.bus.subscribe(self._on_committed)
            self._stop_notified = self._env.notifier.subscribe(Topic.EVENTS, self._on_notified)
            self._task = asyncio.create_task(self._tail(), name="stella-stream-tail")

    def _stop_tailing(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._stop_notified is not None:
            self._stop_notified()
            self._stop_notified = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._carried.clear()

    def _on_committed(self, entry: LedgerEntry) -> None:
        """Bus listener: keep the entry and wake the tailer (thread-safe)."""
        self._carried.add(entry)
        self._on_notified()

    def _on_notified(self) -> None:
        """Wake the tailer from any thread (bus publishers, the NOTIFY listen thread)."""
        loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def _tail(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store outage must not end the stream: the next tick tries again.
                log.exception("stream.tail_failed", extra={"last_seen": self.last_seen})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _catch_up(self) -> None:
        """Read and fan out new entries until a short read says we are current."""
        while True:
            batch = self._batch
            rows = await self._read(
                partial(read_tail, carried=self._carried, after=self.last_seen, limit=batch)
            )
            for row in rows:
                self._fan_out(row)
                self.last_seen = row.id
            if len(rows) < batch:
                return

    def push(self, fields: Event) -> None:
        """Fan out an event that is no ledger entry (`step.progress`): it carries the last seq.

        Best effort, as progress is: a subscriber whose buffer is full just misses it.
        """
        subs = self._subscribers.get(fields["tenant"])
        if not subs:
            return
        event = StreamEvent(self.last_seen, fields, json.dumps(fields, separators=(",", ":")))
        for subscription in list(subs):
            if subscription.where.matches(fields) and subscription.pending < subscription.limit:
                subscription.offer(event)

    def _fan_out(self, row: LedgerRow) -> None:
        subs = self._subscribers.get(row.tenant)
        if not subs:
            return
        event = StreamEvent.of(row)
        delivered = lost = 0
        for subscription in list(subs):
            if not subscription.where.matches(event.fields):
                continue
            if subscription.offer(event):
                delivered += 1
                continue
            lost += 1
            log.warning(
                "stream.slow_consumer",
                extra={"tenant": row.tenant, "limit": subscription.limit},
            )
            self.unsubscribe(subscription)
        now_us = self._env.clock.now_us()
        if delivered:
            self.delivery.count(row.tenant, now_us, bad=False, n=delivered)
        if lost:
            self.delivery.count(row.tenant, now_us, bad=True, n=lost)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
