"""Good and bad events counted in 5-minute buckets over 28 days, in memory, bounded.

The figures an SLO needs that the store never sees (requests answered, stream events lost)
are counted where they happen, per process: each key keeps at most one bucket per 5 minutes
of the budget window, and at most `max_keys` keys are kept (the least recently counted go).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from stellaorch.domain.slo import BACKLOG_WINDOW_US, BUDGET_WINDOW_US, Counts

BUCKET_US = BACKLOG_WINDOW_US
MAX_BUCKETS = BUDGET_WINDOW_US // BUCKET_US
DEFAULT_MAX_KEYS = 1_000


class WindowTally:
    """Per key, (bucket start, total, bad) triples, newest last."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._keys: OrderedDict[str, deque[list[int]]] = OrderedDict()
        self._max_keys = max_keys

    def count(self, key: str, now_us: int, *, bad: bool, n: int = 1) -> None:
        """Add `n` events at `now_us` for `key`, all good or all bad."""
        buckets = self._keys.get(key)
        if buckets is None:
            buckets = self._keys[key] = deque(maxlen=MAX_BUCKETS)
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        start = now_us - now_us % BUCKET_US
        if not buckets or buckets[-1][0] != start:
            buckets.append([start, 0, 0])
        buckets[-1][1] += n
        if bad:
            buckets[-1][2] += n

    def counts(self, key: str, since_us: int) -> Counts:
        """Events of `key` in the buckets that start at or after `since_us`' bucket."""
        first = since_us - since_us % BUCKET_US
        total = bad = 0
        for start, t, b in reversed(self._keys.get(key, ())):
            if start < first:
                break
            total, bad = total + t, bad + b
        return Counts(total, bad)
