"""In-process announcement of committed ledger entries to whoever listens (worker, stream)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from stellaorch.domain.ledger import LedgerEntry

Listener = Callable[[LedgerEntry], None]

log = logging.getLogger("stellaorch.events")


class EventBus:
    """Synchronous fan-out of committed entries; a listener that raises is logged and skipped.

    Publishers call this right after a commit, often on the path that answers a caller: a
    listener's bug must never reach that caller or the listeners after it.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, entries: Iterable[LedgerEntry]) -> None:
        """Announce entries after their transaction committed, in ledger order; never raises."""
        listeners = list(self._listeners)
        for entry in entries:
            for listener in listeners:
                _call(listener, entry)


def _call(listener: Listener, entry: LedgerEntry) -> None:
    try:
        listener(entry)
    except Exception:  # isolation: one listener's bug stays its own
        log.exception(
            "event.listener_failed",
            extra={"listener": repr(listener), "run_id": entry.run_id, "type": entry.entry_type},
        )
