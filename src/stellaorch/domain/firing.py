"""When a schedule fires: jitter, run tokens, overlap and catch-up policies, the firing plan.

Everything here is a pure function of the schedule and the time, so any scheduler process,
before or after a restart, reaches the same decision for the same trigger.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from stellaorch.domain.cron import CronTrigger
from stellaorch.domain.errors import ValidationError
from stellaorch.domain.providers import format_utc

US = 1_000_000
MAX_JITTER_SECONDS = 3_600
MAX_CATCHUP_WINDOW_SECONDS = 7 * 86_400
CATCHUP_LIMIT = 1_000  # most missed triggers one catch-up fires (the newest ones)


class Overlap(StrEnum):
    """What a trigger does while an earlier run of the same schedule is queued or running."""

    SKIP = "skip"  # record the trigger as skipped_overlap, start nothing
    BUFFER_ONE = "buffer_one"  # keep one trigger waiting; start it when the running one ends
    ALLOW = "allow"  # always start a run


class Catchup(StrEnum):
    """Which triggers missed during downtime fire once the scheduler is back."""

    ALL = "all"  # each missed trigger in the window, oldest first
    LATEST = "latest"  # only the newest missed trigger in the window
    NONE = "none"  # none; wait for the next trigger


class Outcome(StrEnum):
    """What became of one trigger of a schedule."""

    STARTED = "started"
    SKIPPED_OVERLAP = "skipped_overlap"
    SKIPPED_DRAINING = "skipped_draining"  # the tenant's queue is draining: trigger held
    BUFFERED = "buffered"
    CLEARED = "cleared"
    REJECTED_DISABLED = "rejected_disabled"
    REJECTED_ERROR = "rejected_error"  # run creation refused for another reason (detail: code)


def jitter_us(schedule_id: str, scheduled_us: int, jitter_seconds: int) -> int:
    """A delay in [0, jitter_seconds] fixed by (schedule, trigger time): restarts keep it."""
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.sha256(f"{schedule_id}:{scheduled_us}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (jitter_seconds * US + 1)


def run_token(schedule_id: str, scheduled_us: int) -> str:
    """The runToken of a trigger: one trigger can never make two runs."""
    return f"schedule:{schedule_id}:{format_utc(scheduled_us)}"


def backfill_token(schedule_id: str, scheduled_us: int) -> str:
    """The runToken of a backfilled trigger: re-running a backfill never makes a second run."""
    return f"backfill:{schedule_id}:{format_utc(scheduled_us)}"


def check_bounds(catchup_window_seconds: int, jitter_seconds: int) -> None:
    """Refuse negative or absurd windows and jitters."""
    if not 0 <= catchup_window_seconds <= MAX_CATCHUP_WINDOW_SECONDS:
        raise ValidationError(
            f"catchupWindowSeconds must be between 0 and {MAX_CATCHUP_WINDOW_SECONDS}"
        )
    if not 0 <= jitter_seconds <= MAX_JITTER_SECONDS:
        raise ValidationError(f"jitterSeconds must be between 0 and {MAX_JITTER_SECONDS}")


@dataclass(frozen=True)
class Plan:
    """Triggers to fire now (oldest first), the next trigger, and how many were dropped."""

    fire: tuple[int, ...]
    next_fire_us: int
    dropped: int


@dataclass(frozen=True)
class ScheduleTiming:
    """The time-related settings of one schedule."""

    schedule_id: str
    trigger: CronTrigger
    catchup: Catchup
    catchup_window_seconds: int
    jitter_seconds: int

    def due_us(self, scheduled_us: int) -> int:
        """When a trigger is due: its scheduled time plus its jitter."""
        return scheduled_us + jitter_us(self.schedule_id, scheduled_us, self.jitter_seconds)

    def first_after(self, after_us: int) -> int:
        """The first trigger strictly after `after_us`."""
        return self.trigger.next_after(after_us)

    def plan(self, next_fire_us: int, now_us: int, grace_us: int, limit: int) -> Plan:
        """Which triggers from `next_fire_us` on fire at `now_us`, oldest first."""
        # A trigger due more than `grace_us` ago was missed (downtime): the catch-up policy
        # decides whether it still fires. Triggers fire in order, so one still waiting for
        # its jitter holds back the later ones.
        if next_fire_us > now_us:
            return Plan((), next_fire_us, 0)
        reach = grace_us if self.catchup is Catchup.NONE else self.catchup_window_seconds * US
        lower = max(next_fire_us, now_us - max(reach, grace_us) - self.jitter_seconds * US)
        candidates = self.trigger.fires_between(lower, now_us, limit)
        due = self._due_prefix(candidates, now_us)
        fire = [f for f in due if self._wanted(f, now_us, grace_us)]
        if self.catchup is Catchup.LATEST:
            fire = fire[-1:]
        if due:
            following = self.first_after(due[-1])
        else:
            following = candidates[0] if candidates else self.first_after(now_us)
        return Plan(tuple(fire), following, len(due) - len(fire))

    def _due_prefix(self, candidates: list[int], now_us: int) -> list[int]:
        """The leading candidates whose due time has come."""
        due: list[int] = []
        for scheduled in candidates:
            if self.due_us(scheduled) > now_us:
                break
            due.append(scheduled)
        return due

    def _wanted(self, scheduled_us: int, now_us: int, grace_us: int) -> bool:
        """On time always fires; a missed trigger fires per the catch-up policy and window."""
        late_by = now_us - self.due_us(scheduled_us)
        if late_by <= grace_us:
            return True
        if self.catchup is Catchup.NONE:
            return False
        return late_by <= self.catchup_window_seconds * US
