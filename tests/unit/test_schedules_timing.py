"""Cron triggers, time zones and DST, jitter, run tokens and the catch-up plan (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellaorch.domain.cron import CronInvalid, TimezoneInvalid, parse_trigger
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.firing import (
    Catchup,
    ScheduleTiming,
    check_bounds,
    jitter_us,
    run_token,
)
from stellaorch.domain.providers import format_utc, parse_utc

NOW = parse_utc("2026-01-01T00:00:00Z")
S = 1_000_000
SID = "0190b7c2-5d1e-7a00-8000-000000000001"


def next_times(cron: str, tz: str, after: str, count: int) -> list[str]:
    trigger = parse_trigger(cron, tz, NOW)
    t, out = parse_utc(after), []
    for _ in range(count):
        t = trigger.next_after(t)
        out.append(str(format_utc(t)))
    return out


def between(cron: str, tz: str, lower: str, upper: str, limit: int = 100) -> list[str]:
    trigger = parse_trigger(cron, tz, NOW)
    fires = trigger.fires_between(parse_utc(lower), parse_utc(upper), limit)
    return [str(format_utc(f)) for f in fires]


def timing(
    catchup: Catchup, window: int = 600, jitter: int = 0, cron: str = "* * * * *"
) -> ScheduleTiming:
    return ScheduleTiming(SID, parse_trigger(cron, "UTC", NOW), catchup, window, jitter)


# -- expressions --------------------------------------------------------------------------
def test_five_field_expression_fires_on_minutes() -> None:
    assert next_times("*/15 * * * *", "UTC", "2026-01-01T00:07:30Z", 3) == [
        "2026-01-01T00:15:00.000Z",
        "2026-01-01T00:30:00.000Z",
        "2026-01-01T00:45:00.000Z",
    ]


def test_six_field_expression_has_seconds_first() -> None:
    assert next_times("10 * * * * *", "UTC", "2026-01-01T00:00:00Z", 2) == [
        "2026-01-01T00:00:10.000Z",
        "2026-01-01T00:01:10.000Z",
    ]


def test_next_fire_is_strictly_after_the_given_time() -> None:
    assert next_times("* * * * * *", "UTC", "2026-01-01T00:00:05Z", 1) == [
        "2026-01-01T00:00:06.000Z"
    ]
    assert next_times("* * * * * *", "UTC", "2026-01-01T00:00:05.001Z", 1) == [
        "2026-01-01T00:00:06.000Z"
    ]


def test_time_zone_shifts_wall_clock_times() -> None:
    assert next_times("0 9 * * *", "America/New_York", "2026-01-01T00:00:00Z", 1) == [
        "2026-01-01T14:00:00.000Z"
    ]


@pytest.mark.parametrize(
    "cron",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "60 * * * *",
        "a b c d e",
        "*/0 * * * *",
        "@hourly",
        "0 0 30 2 *",
    ],
)
def test_invalid_expressions_are_cron_invalid(cron: str) -> None:
    with pytest.raises(CronInvalid) as caught:
        parse_trigger(cron, "UTC", NOW)
    assert caught.value.code == "CRON_INVALID"


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe/"])
def test_unknown_time_zones_are_timezone_invalid(tz: str) -> None:
    with pytest.raises(TimezoneInvalid) as caught:
        parse_trigger("* * * * *", tz, NOW)
    assert caught.value.code == "TIMEZONE_INVALID"


# -- daylight saving time (Europe/Berlin: 2026-03-29 02:00→03:00, 2026-10-25 03:00→02:00) ---
def test_fixed_time_skipped_by_spring_forward_fires_right_after_the_jump() -> None:
    assert next_times("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2) == [
        "2026-03-29T01:00:00.000Z",  # 03:00 CEST
        "2026-03-30T00:30:00.000Z",  # 02:30 CEST
    ]


def test_fixed_time_repeated_by_fall_back_fires_once() -> None:
    assert next_times("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2) == [
        "2026-10-25T00:30:00.000Z",  # 02:30 CEST, the first pass
        "2026-10-26T01:30:00.000Z",  # 02:30 CET
    ]


def test_wildcard_hours_fire_at_every_real_occurrence_when_clocks_fall_back() -> None:
    assert between(
        "0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", "2026-10-25T02:30:00Z"
    ) == [
        "2026-10-25T00:00:00.000Z",  # 02:00 CEST
        "2026-10-25T01:00:00.000Z",  # 02:00 CET
        "2026-10-25T02:00:00.000Z",  # 03:00 CET
    ]


def test_wildcard_hours_skip_the_hour_that_does_not_exist() -> None:
    assert between(
        "0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", "2026-03-29T02:30:00Z"
    ) == [
        "2026-03-29T00:00:00.000Z",  # 01:00 CET
        "2026-03-29T01:00:00.000Z",  # 03:00 CEST
        "2026-03-29T02:00:00.000Z",  # 04:00 CEST
    ]


def test_fires_between_agrees_with_next_after_across_dst() -> None:
    forward = next_times("*/20 * * * *", "Europe/Berlin", "2026-10-24T23:59:59Z", 9)
    assert between("*/20 * * * *", "Europe/Berlin", "2026-10-25T00:00:00Z", forward[-1]) == forward


def test_fires_between_keeps_the_newest_when_bounded() -> None:
    assert between("* * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", 2) == [
        "2026-01-01T00:59:00.000Z",
        "2026-01-01T01:00:00.000Z",
    ]


# -- jitter, tokens, bounds ----------------------------------------------------------------
@given(st.integers(min_value=0, max_value=2**50), st.integers(min_value=0, max_value=3600))
def test_jitter_is_deterministic_and_bounded(scheduled: int, seconds: int) -> None:
    first = jitter_us(SID, scheduled, seconds)
    assert first == jitter_us(SID, scheduled, seconds)
    assert 0 <= first <= seconds * S


def test_jitter_differs_between_triggers_and_schedules() -> None:
    values = {jitter_us(SID, NOW + i * 60 * S, 300) for i in range(20)}
    values.add(jitter_us("another-schedule", NOW, 300))
    assert len(values) > 15


def test_run_token_names_schedule_and_scheduled_time() -> None:
    assert run_token(SID, NOW) == f"schedule:{SID}:2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("window", "jitter"), [(-1, 0), (0, -1), (10**9, 0), (0, 10**6)])
def test_negative_or_absurd_window_and_jitter_are_refused(window: int, jitter: int) -> None:
    with pytest.raises(ValidationError):
        check_bounds(window, jitter)


# -- the firing plan -----------------------------------------------------------------------
def test_an_on_time_trigger_fires_and_the_next_one_follows() -> None:
    plan = timing(Catchup.NONE).plan(NOW, NOW + 50_000, 2 * S, 1000)
    assert plan.fire == (NOW,)
    assert plan.next_fire_us == NOW + 60 * S


def test_nothing_fires_before_its_time() -> None:
    plan = timing(Catchup.ALL).plan(NOW + 60 * S, NOW, 2 * S, 1000)
    assert (plan.fire, plan.next_fire_us) == ((), NOW + 60 * S)


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [(Catchup.ALL, 10), (Catchup.LATEST, 1), (Catchup.NONE, 0)],
)
def test_catchup_after_an_hour_of_downtime(catchup: Catchup, expected: int) -> None:
    now = NOW + 3600 * S + 30 * S  # the 01:00 trigger is 30 s late: missed
    plan = timing(catchup, window=600).plan(NOW + 60 * S, now, 2 * S, 1000)
    assert len(plan.fire) == expected
    assert list(plan.fire) == sorted(plan.fire)
    if plan.fire:
        assert plan.fire[-1] == NOW + 3600 * S
    assert plan.next_fire_us == NOW + 3660 * S


def test_catchup_all_is_bounded_to_the_newest_triggers() -> None:
    plan = timing(Catchup.ALL, window=86_400).plan(NOW, NOW + 86_400 * S, 2 * S, 5)
    assert plan.fire == tuple(NOW + 86_400 * S - i * 60 * S for i in range(4, -1, -1))


def test_a_trigger_waits_for_its_jitter() -> None:
    t = timing(Catchup.ALL, jitter=30)
    delay = jitter_us(SID, NOW, 30)
    assert t.plan(NOW, NOW + delay - 1, 2 * S, 1000).fire == ()
    assert t.plan(NOW, NOW + delay, 2 * S, 1000).fire == (NOW,)


@given(
    st.lists(st.integers(min_value=0, max_value=200 * S), min_size=1, max_size=30),
    st.sampled_from(list(Catchup)),
    st.integers(min_value=0, max_value=120),
)
def test_successive_plans_fire_each_trigger_at_most_once_in_order(
    steps: list[int], catchup: Catchup, jitter: int
) -> None:
    t = timing(catchup, window=300, jitter=jitter, cron="*/20 * * * * *")
    next_fire, now, fired = t.first_after(NOW), NOW, []
    for step in steps:
        now += step
        plan = t.plan(next_fire, now, 2 * S, 1000)
        assert all(t.due_us(f) <= now for f in plan.fire)
        assert plan.next_fire_us > (plan.fire[-1] if plan.fire else next_fire - 1)
        fired += plan.fire
        next_fire = plan.next_fire_us
    assert fired == sorted(set(fired))


@given(st.lists(st.integers(min_value=0, max_value=2 * S), min_size=1, max_size=60))
def test_a_scheduler_that_keeps_up_fires_every_trigger(steps: list[int]) -> None:
    t = timing(Catchup.NONE, cron="* * * * * *")
    next_fire, now, fired = t.first_after(NOW), NOW, []
    for step in steps:
        now += step
        plan = t.plan(next_fire, now, 2 * S, 1000)
        fired += plan.fire
        next_fire = plan.next_fire_us
    expected = t.trigger.fires_between(NOW + 1, now, 10_000)
    assert fired == expected
