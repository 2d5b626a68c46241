"""A run's first signal (SPEC §8): the first stream event that shows it at work, with an ETag.

Once a run has one it never changes, so found signals are kept in memory: a client polling
for it (with `If-None-Match`) costs no store read after the first answer.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

from stellaorch.domain.errors import RunNotFound
from stellaorch.domain.ledger import FIRST_SIGNAL
from stellaorch.engine.env import EngineEnv
from stellaorch.engine.stream_events import event_of
from stellaorch.store import Connection, events, runs

CACHE_SIZE = 10_000  # signals kept (a few hundred bytes each)
_TYPES = sorted(FIRST_SIGNAL)


@dataclass(frozen=True)
class FirstSignal:
    """The signal as served: its JSON body and its weak entity tag."""

    etag: str
    body: bytes


class FirstSignals:
    """Finds runs' first signals, and remembers those found."""

    def __init__(self, env: EngineEnv) -> None:
        self._env = env
        self._found: OrderedDict[tuple[str, str], FirstSignal] = OrderedDict()

    async def get(self, tenant: str, run_id: str) -> FirstSignal | None:
        """The run's first signal; None while it has none; RunNotFound for another tenant's."""
        key = (tenant, run_id)
        hit = self._found.get(key)
        if hit is not None:
            self._found.move_to_end(key)
            return hit
        signal = await self._env.db.read(lambda conn: _read(conn, tenant, run_id))
        if signal is not None:
            self._found[key] = signal
            if len(self._found) > CACHE_SIZE:
                self._found.popitem(last=False)
        return signal


def _read(conn: Connection, tenant: str, run_id: str) -> FirstSignal | None:
    run = runs.get_run(conn, tenant, run_id)
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    row = events.read_first_of_types(conn, tenant, run_id, _TYPES)
    if row is None:
        return None
    event = event_of(row)
    event["sinceCreatedMs"] = round((row.ts_us - run.created_us) / 1000, 3)
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    # The entry's global id names this representation: it is the same wherever it is read.
    return FirstSignal(etag=f'W/"{row.id}"', body=body)
