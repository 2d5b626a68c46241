"""Cron triggers in a time zone: parse, the next fire time, the fire times of a window.

Expressions have 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading
seconds field (as in Quartz and Spring). Fire times are whole seconds in epoch microseconds.

Daylight saving time follows Vixie cron: an expression with fixed minute and hour fields
fires once per wall-clock time — a time skipped when clocks spring forward fires right after
the jump, a time repeated when they fall back fires on its first pass only; expressions with
`*` in the minute or hour field fire at every real occurrence of a matching wall time.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from stellaorch.domain.errors import ValidationError

MAX_EXPRESSION_LENGTH = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_SEARCH_LIMIT = 10_000  # candidate times examined per call before giving up
_parsed = threading.local()  # expression -> parsed croniter, per thread
_CACHE_SIZE = 1_024


class CronInvalid(ValidationError):
    """The cron expression cannot be parsed or never fires."""

    code = "CRON_INVALID"


class TimezoneInvalid(ValidationError):
    """The time zone is not a known IANA zone name."""

    code = "TIMEZONE_INVALID"


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; TimezoneInvalid when there is none."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise TimezoneInvalid(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise TimezoneInvalid(f"unknown time zone {name!r}") from exc


def _fields(expression: str) -> list[str]:
    """The expression's fields; only 5 or 6 are accepted."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CronInvalid(f"cron expression longer than {MAX_EXPRESSION_LENGTH} characters")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise CronInvalid(
            f"cron expression {expression!r} must have 5 fields, or 6 with leading seconds"
        )
    return fields


def _local(us: int, tz: ZoneInfo) -> datetime:
    """The wall-clock time in `tz` of an instant (fold set on a repeated hour)."""
    return (_EPOCH + us * _ONE_US).astimezone(tz)


def _instant(dt: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    return (dt - _EPOCH) // _ONE_US


def _repeated(local: datetime) -> bool:
    """True on the second pass through a wall time that clocks falling back repeat."""
    return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()


@dataclass(frozen=True)
class CronTrigger:
    """A validated cron expression bound to a time zone."""

    expression: str
    timezone: str

    @property
    def with_seconds(self) -> bool:
        """True for a 6-field expression (leading seconds field)."""
        return len(self.expression.split()) == 6

    @property
    def fixed_time(self) -> bool:
        """True when minute and hour are fixed (no `*`): the DST once-per-wall-time rule."""
        fields = self.expression.split()[1:3] if self.with_seconds else self.expression.split()[:2]
        return not any("*" in f for f in fields)

    def _iterator(self, start_us: int) -> croniter:
        """A parsed iterator (reused per thread: parsing dominates the cost) set to a start."""
        cache: dict[str, croniter] = _parsed.__dict__.setdefault("by_expression", {})
        found = cache.get(self.expression)
        if found is None:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            found = croniter(self.expression, _EPOCH, second_at_beginning=self.with_seconds)
            cache[self.expression] = found
        found.set_current(_local(start_us, zone(self.timezone)), force=True)
        return found

    def _accept(self, us: int) -> bool:
        return not (self.fixed_time and _repeated(_local(us, zone(self.timezone))))

    def next_after(self, after_us: int) -> int:
        """The first fire time strictly after `after_us`."""
        found = self._iterator(after_us)
        try:
            for _ in range(_SEARCH_LIMIT):
                us = _instant(found.get_next(datetime))
                if us > after_us and self._accept(us):
                    return us
        except CroniterError as exc:
            raise CronInvalid(f"cron expression {self.expression!r} never fires") from exc
        raise CronInvalid(f"cron expression {self.expression!r} found no next fire time")

    def shortest_gap_seconds(self, from_us: int, fires: int = 64) -> float:
        """The shortest time between two consecutive fire times among the next `fires`."""
        times = [self.next_after(from_us)]
        for _ in range(fires - 1):
            times.append(self.next_after(times[-1]))
        return min(b - a for a, b in pairwise(times)) / 1_000_000

    def fires_between(self, lower_us: int, upper_us: int, limit: int) -> list[int]:
        """Fire times in [lower, upper], oldest first; at most the newest `limit` of them."""
        if limit <= 0 or upper_us < lower_us:
            return []
        found = self._iterator(upper_us + 1)
        fires: set[int] = set()
        try:
            for _ in range(limit + _SEARCH_LIMIT):
                us = _instant(found.get_prev(datetime))
                if us < lower_us or len(fires) >= limit:
                    break
                if us <= upper_us and self._accept(us):
                    fires.add(us)
        except CroniterError:
            pass  # no earlier fire time exists
        return sorted(fires)


def parse_trigger(expression: str, timezone: str, now_us: int) -> CronTrigger:
    """Validate an expression and zone; CronInvalid / TimezoneInvalid say what is wrong."""
    zone(timezone)
    expression = " ".join(_fields(expression))
    trigger = CronTrigger(expression, timezone)
    try:
        trigger._iterator(now_us)
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise CronInvalid(f"cron expression {expression!r} is not valid: {exc}") from exc
    trigger.next_after(now_us)
    return trigger
