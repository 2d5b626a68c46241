"""Service level objectives: the built-in defaults, error-budget burn over fast and slow windows.

Every SLO is a ratio of good events to all events over a rolling 28-day budget window. The
burn rate over a window is the bad fraction seen in it divided by the bad fraction the
objective allows: 1 spends the budget exactly in 28 days, 14 spends it in two days. The
status follows the multiwindow policy: `critical` when the fast window (1 h) burns 14 times
or more, `warn` when the slow window (6 h) burns 2 times or more, else `ok`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stellaorch.domain.errors import ValidationError

HOUR_US = 3_600 * 1_000_000
FAST_WINDOW_US = HOUR_US
SLOW_WINDOW_US = 6 * HOUR_US
BUDGET_WINDOW_US = 28 * 24 * HOUR_US
WARN_BURN = 2.0
CRITICAL_BURN = 14.0
EPSILON = 1e-9
# Backlog is judged per 5-minute window: the window is bad when the depth reached the threshold.
BACKLOG_WINDOW_US = 5 * 60 * 1_000_000
WINDOWS_US = {"1h": FAST_WINDOW_US, "6h": SLOW_WINDOW_US, "28d": BUDGET_WINDOW_US}


class SloId(StrEnum):
    """The objectives the server measures."""

    API_AVAILABILITY = "api-availability"  # requests not answered with a 5xx
    RUN_DURATION = "run-duration"  # finished runs that took at most `threshold` seconds
    RUN_FAILURE_RATE = "run-failure-rate"  # finished runs that did not fail
    BACKLOG = "backlog"  # 5-minute windows whose queue depth stayed below `threshold`
    STREAM_DELIVERY = "stream-delivery"  # stream events delivered (not lost to a slow consumer)


@dataclass(frozen=True)
class Objective:
    """One SLO's target: the good fraction, and the limit that makes an event bad, if any."""

    objective: float
    threshold: float | None = None


DEFAULTS: dict[SloId, Objective] = {
    SloId.API_AVAILABILITY: Objective(0.999),
    SloId.RUN_DURATION: Objective(0.95, 300.0),
    SloId.RUN_FAILURE_RATE: Objective(0.99),
    SloId.BACKLOG: Objective(0.95, 1000.0),
    SloId.STREAM_DELIVERY: Objective(0.995),
}
MIN_OBJECTIVE, MAX_OBJECTIVE = 0.5, 0.99999
MAX_THRESHOLD = 1e9


def parse_slo_id(value: str) -> SloId:
    """The SLO named `value`, or a 400 naming the known ones."""
    try:
        return SloId(value)
    except ValueError:
        known = ", ".join(s.value for s in SloId)
        raise ValidationError(f"unknown SLO {value[:64]!r}; known: {known}") from None


def checked_objective(slo: SloId, objective: float, threshold: float | None) -> Objective:
    """A tenant's objective after bounds checks: a target in [0.5, 0.99999], a positive
    threshold only for the SLOs that have one (the default threshold when none is given)."""
    if not MIN_OBJECTIVE <= objective <= MAX_OBJECTIVE:
        raise ValidationError(
            f"objective must be between {MIN_OBJECTIVE} and {MAX_OBJECTIVE}, got {objective}"
        )
    default = DEFAULTS[slo].threshold
    if threshold is None:
        return Objective(objective, default)
    if default is None:
        raise ValidationError(f"the {slo.value} SLO takes no threshold")
    if not 0 < threshold <= MAX_THRESHOLD:
        raise ValidationError(f"threshold must be above 0 and at most {MAX_THRESHOLD:g}")
    return Objective(objective, threshold)


@dataclass(frozen=True)
class Counts:
    """Events seen in one window: all of them, and the bad ones."""

    total: int
    bad: int

    def burn(self, objective: float) -> float:
        """The bad fraction over the allowed bad fraction (0 when nothing happened)."""
        if self.total <= 0:
            return 0.0
        return (self.bad / self.total) / (1.0 - objective)


@dataclass(frozen=True)
class SloStatus:
    """One SLO of one tenant now: target, burn per window, budget left, verdict."""

    slo: SloId
    target: Objective
    windows: dict[str, Counts]
    scope: str  # "tenant", or "process" for figures only this process saw

    @property
    def burn(self) -> dict[str, float]:
        """Burn rate per window name."""
        return {name: c.burn(self.target.objective) for name, c in self.windows.items()}

    @property
    def budget_remaining(self) -> float:
        """The share of the 28-day budget left (negative once overspent)."""
        return 1.0 - self.windows["28d"].burn(self.target.objective)

    @property
    def status(self) -> str:
        """`critical`, `warn` or `ok` by the multiwindow policy."""
        burn = self.burn
        # Float division lands a hair under a threshold that was met exactly (0.14 / 0.01).
        if burn["1h"] >= CRITICAL_BURN - EPSILON:
            return "critical"
        if burn["6h"] >= WARN_BURN - EPSILON:
            return "warn"
        return "ok"

    def document(self) -> dict[str, Any]:
        """The SLO as `/admin/health` and `/admin/slos` show it."""
        return {
            "id": self.slo.value,
            "objective": self.target.objective,
            "threshold": self.target.threshold,
            "scope": self.scope,
            "status": self.status,
            "burn": {name: round(value, 4) for name, value in self.burn.items()},
            "budgetRemaining": round(self.budget_remaining, 4),
            "events": {n: {"total": c.total, "bad": c.bad} for n, c in self.windows.items()},
        }
