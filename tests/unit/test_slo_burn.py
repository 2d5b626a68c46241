"""Error-budget burn and the multiwindow verdict; the bounded in-memory window tally."""

from __future__ import annotations

import pytest

from stellaorch.domain.errors import ValidationError
from stellaorch.domain.slo import (
    DEFAULTS,
    Counts,
    Objective,
    SloId,
    SloStatus,
    checked_objective,
    parse_slo_id,
)
from stellaorch.observability.tally import BUCKET_US, MAX_BUCKETS, WindowTally

HOUR = 3_600_000_000


def status(fast: Counts, slow: Counts, budget: Counts, objective: float = 0.99) -> SloStatus:
    windows = {"1h": fast, "6h": slow, "28d": budget}
    return SloStatus(SloId.RUN_FAILURE_RATE, Objective(objective), windows, "tenant")


def test_burn_is_the_bad_fraction_over_the_allowed_one() -> None:
    assert Counts(100, 1).burn(0.99) == pytest.approx(1.0)
    assert Counts(1000, 1).burn(0.999) == pytest.approx(1.0)
    assert Counts(10, 5).burn(0.95) == pytest.approx(10.0)
    assert Counts(0, 0).burn(0.99) == 0.0


@pytest.mark.parametrize(
    ("fast", "slow", "verdict"),
    [
        (Counts(100, 14), Counts(100, 1), "critical"),  # 14 times in the last hour
        (Counts(100, 13), Counts(100, 1), "ok"),
        (Counts(100, 13), Counts(100, 2), "warn"),  # 2 times over six hours
        (Counts(0, 0), Counts(100, 3), "warn"),
        (Counts(0, 0), Counts(0, 0), "ok"),
    ],
)
def test_the_verdict_follows_the_fast_and_slow_windows(
    fast: Counts, slow: Counts, verdict: str
) -> None:
    assert status(fast, slow, slow).status == verdict


def test_the_budget_left_goes_negative_once_overspent() -> None:
    none = Counts(0, 0)
    assert status(none, none, Counts(1000, 5)).budget_remaining == pytest.approx(0.5)
    assert status(none, none, Counts(100, 3)).budget_remaining == pytest.approx(-2.0)
    document = status(Counts(10, 1), Counts(10, 1), Counts(10, 1)).document()
    assert document["burn"] == {"1h": 10.0, "6h": 10.0, "28d": 10.0}
    assert document["events"]["1h"] == {"total": 10, "bad": 1}


def test_the_defaults_are_the_ones_the_spec_names() -> None:
    assert DEFAULTS[SloId.API_AVAILABILITY] == Objective(0.999)
    assert DEFAULTS[SloId.RUN_DURATION] == Objective(0.95, 300.0)
    assert DEFAULTS[SloId.RUN_FAILURE_RATE] == Objective(0.99)
    assert DEFAULTS[SloId.BACKLOG] == Objective(0.95, 1000.0)
    assert DEFAULTS[SloId.STREAM_DELIVERY] == Objective(0.995)


def test_objectives_outside_their_bounds_are_refused() -> None:
    assert checked_objective(SloId.BACKLOG, 0.9, None) == Objective(0.9, 1000.0)
    assert checked_objective(SloId.BACKLOG, 0.9, 50) == Objective(0.9, 50)
    for slo, objective, threshold in (
        (SloId.BACKLOG, 1.0, None),  # no budget at all: every burn would divide by zero
        (SloId.BACKLOG, 0.2, None),
        (SloId.BACKLOG, 0.9, 0.0),
        (SloId.API_AVAILABILITY, 0.9, 10.0),
    ):
        with pytest.raises(ValidationError):
            checked_objective(slo, objective, threshold)
    with pytest.raises(ValidationError, match="known: api-availability"):
        parse_slo_id("uptime")


def test_the_tally_counts_per_window_and_key() -> None:
    tally = WindowTally()
    now = 1_000 * HOUR
    tally.count("a", now - 2 * HOUR, bad=True)
    tally.count("a", now, bad=False, n=3)
    tally.count("a", now, bad=True)
    tally.count("b", now, bad=True)
    assert tally.counts("a", now - HOUR) == Counts(4, 1)
    assert tally.counts("a", now - 6 * HOUR) == Counts(5, 2)
    assert tally.counts("b", now - HOUR) == Counts(1, 1)
    assert tally.counts("nobody", now - HOUR) == Counts(0, 0)


def test_the_tally_stays_bounded_in_keys_and_buckets() -> None:
    tally = WindowTally(max_keys=2)
    now = 1_000 * HOUR
    for key in ("a", "b", "c"):
        tally.count(key, now, bad=False)
    assert tally.counts("a", 0) == Counts(0, 0)  # the least recently counted key went
    assert tally.counts("c", 0) == Counts(1, 0)
    for i in range(MAX_BUCKETS + 10):
        tally.count("c", now + i * BUCKET_US, bad=False)
    assert tally.counts("c", 0).total == MAX_BUCKETS  # older buckets fell off
