"""The in-process event bus: every listener hears every entry, whatever the others do."""

from __future__ import annotations

import logging

import pytest

from stellaorch.domain.ledger import LedgerEntry
from stellaorch.engine.events import EventBus


def entry(seq: int) -> LedgerEntry:
    return LedgerEntry("r1", seq, "acme", "d", "t" * 32, "step.queued", "queued", 0, "", "", "{}")


def broken(_entry: LedgerEntry) -> None:
    raise RuntimeError("listener bug")


def test_a_raising_listener_is_logged_and_the_others_still_hear_every_entry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    before: list[int] = []
    after: list[int] = []
    bus.subscribe(lambda e: before.append(e.seq))
    bus.subscribe(broken)
    bus.subscribe(lambda e: after.append(e.seq))

    with caplog.at_level(logging.ERROR, logger="stellaorch.events"):
        bus.publish([entry(1), entry(2)])

    assert before == after == [1, 2]
    assert [r.message for r in caplog.records] == ["event.listener_failed"] * 2
