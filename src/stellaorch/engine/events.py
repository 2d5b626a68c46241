"""In-process announcement of committed ledger entries to whoever listens (worker, stream)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stellaorch.domain.ledger import LedgerEntry

Listener = Callable[[LedgerEntry], None]


class EventBus:
    """Synchronous fan-out of committed entries; listeners must be quick and never raise."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, entries: Iterable[LedgerEntry]) -> None:
        """Announce entries after their transaction committed, in ledger order."""
        listeners = list(self._listeners)
        for entry in entries:
            for listener in listeners:
                listener(entry)
