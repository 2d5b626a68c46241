"""The oldest-waiting-item gauge: seconds since it was queued, 0 for an empty queue."""

from __future__ import annotations

from stellaorch.observability.exposition import queue_age_family


def test_the_age_is_seconds_since_the_oldest_item_was_queued() -> None:
    now = 1_000_000_000_000
    family = queue_age_family({"b": None, "a": now - 2_500_000, "c": now + 5}, now)
    got = {s.labels["tenant"]: s.value for s in family.samples}
    assert got == {"a": 2.5, "b": 0.0, "c": 0.0}  # a clock step back never goes negative
    assert [s.labels["tenant"] for s in family.samples] == ["a", "b", "c"]
    assert family.name == "orchestrator_queue_oldest_age_seconds"
