"""Cross-process wake-ups on PostgreSQL: NOTIFY when work or ledger entries commit, LISTEN here.

The notification is a signal, never the payload: a listener reacts by reading the store (a
claim, a tail read) as it would at its next poll, only sooner. The channel is derived from
the connection's schema, so stores that share a database (one schema each) never cross-talk.
SQLite has one process per store file in practice, and the in-process bus covers it: no-op.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from enum import StrEnum

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from stellaorch.store.retries import Backoff, outlast_sync

log = logging.getLogger("stellaorch.notify")

Callback = Callable[[], None]


class Topic(StrEnum):
    """What a notification announces; each topic is its own channel."""

    EVENTS = "events"  # ledger entries committed: stream tailers read them
    WORK = "work"  # steps became claimable that the sender did not lease itself: workers claim
    WARM = "warm"  # an operator asked every process to refresh its caches (POST /admin/warm)


# md5 keeps the names safe identifiers under PostgreSQL's 63-byte limit for any schema name.
_BASE_SQL = "'stella_' || md5(coalesce(current_schema(), ''))"
_notify = text(f"SELECT pg_notify({_BASE_SQL} || '_' || :topic, :sender)")
# Connection info key of the sending Database's token: its own Notifier skips what it sent,
# since the in-process event bus already woke everyone there.
SENDER_KEY = "stella_notify_sender"
LISTEN_TIMEOUT_SECONDS = 0.5  # how often the listen thread checks whether to stop
MAX_BACKOFF_SECONDS = 5.0
# Reconnecting a dropped LISTEN connection: 0.1 s, doubling, at most MAX_BACKOFF_SECONDS.
LISTEN_OUTAGE = Backoff(first=0.1, cap=MAX_BACKOFF_SECONDS)


def notify_committed(conn: Connection, topic: Topic = Topic.EVENTS) -> None:
    """Queue a wake-up on this store's channel; PostgreSQL delivers it when the unit commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(_notify, {"topic": topic.value, "sender": conn.info.get(SENDER_KEY, "")})


def libpq_url(url: str) -> str:
    """The store URL as psycopg takes it (no SQLAlchemy driver suffix, options kept)."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class Notifier:
    """LISTENs on the store's channel in a background thread and calls the registered callbacks.

    The thread starts with the first subscriber and reconnects with backoff if its connection
    drops; callbacks run on that thread, so they must be quick and thread-safe.
    """

    def __init__(self, url: str, *, connect_timeout_seconds: int = 5, own: str = "") -> None:
        self.enabled = not url.startswith("sqlite")
        self._own = own  # the sender token of this engine's Database: not a wake-up for us
        self._url = libpq_url(url) if self.enabled else ""
        self._connect_timeout = connect_timeout_seconds
        self._callbacks: list[tuple[Topic, Callback]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0  # notifications delivered to callbacks (for tests and metrics)

    def subscribe(self, topic: Topic, callback: Callback) -> Callable[[], None]:
        """Call `callback` on every notification of `topic`; returns a function that removes it.

        Callbacks are also called once whenever the listen connection (re)connects: anything
        committed while nobody listened is picked up then.
        """
        entry = (topic, callback)
        with self._lock:
            self._callbacks.append(entry)
        self._ensure_started()
        return lambda: self._unsubscribe(entry)

    def _unsubscribe(self, entry: tuple[Topic, Callback]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(entry)

    def _ensure_started(self) -> None:
        if not self.enabled or self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name="stella-listen", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LISTEN_TIMEOUT_SECONDS * 4)
            self._thread = None

    def _run(self) -> None:
        outlast_sync(
            self._listen,
            outage=psycopg.Error,
            until=self._stop,
            backoff=LISTEN_OUTAGE,
            on_retry=_log_listen_failed,
        )

    def _listen(self) -> None:
        """One LISTEN session: deliver notifications until stopped or the connection drops."""
        with psycopg.connect(
            self._url, autocommit=True, connect_timeout=self._connect_timeout
        ) as conn:
            base = str(conn.execute(f"SELECT {_BASE_SQL}").fetchone()[0])  # type: ignore[index]
            channels = {f"{base}_{topic.value}": topic for topic in Topic}
            for channel in channels:
                conn.execute(f'LISTEN "{channel}"')
            # Anything committed while we were not listening is picked up by one wake now.
            self._deliver(set(Topic))
            while not self._stop.is_set():
                for note in conn.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                    if not self._own or note.payload != self._own:
                        self._deliver({channels[note.channel]})

    def _deliver(self, topics: set[Topic]) -> None:
        with self._lock:
            callbacks = [c for t, c in self._callbacks if t in topics]
        self.received += 1
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a listener bug must not end the listen thread
                log.exception("notify.callback_failed")


def _log_listen_failed(exc: BaseException, delay: float) -> None:
    log.warning(
        "notify.listen_failed", extra={"retry_in_seconds": round(delay, 1), "error": str(exc)}
    )
