"""In-process announcement of committed ledger entries to whoever listens (worker, stream)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from stellaorch.domain.ledger import LedgerEntry

Listener = Callable[[LedgerEntry], None]

log = logging.getLogger("stellaorch.events")
state_log = logging.getLogger("stellaorch.ledger")


class EventBus:
    """Synchronous fan-out of committed entries; a listener that raises is logged and skipped.

    Publishers call this right after a commit, often on the path that answers a caller: a
    listener's bug must never reach that caller or the listeners after it.
    """

    def __init__(self) -> None:
        # Every committed state change is logged, in whichever process committed it.
        self._listeners: list[Listener] = [log_state_change]

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


def log_state_change(entry: LedgerEntry) -> None:
    """Log a committed state change at info; a failure names its error code and step."""
    if not state_log.isEnabledFor(logging.INFO):
        return
    error = entry.data.get("error")
    error = error if isinstance(error, dict) else {}
    fields = {
        "tenant": entry.tenant,
        "dag_id": entry.dag_id,
        "run_id": entry.run_id,
        "step_id": entry.step_id or error.get("stepId"),
        "attempt": entry.attempt,
        "status": entry.status,
        "trace_id": entry.trace_id,
        "error_code": error.get("code"),
    }
    state_log.info(entry.entry_type, extra=fields)
