"""Prometheus metrics of one app: run, step and lease figures derived from committed ledger
entries, and HTTP request figures; all in the app's own registry, never the global one."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from stellaorch.domain.ledger import RUN_ENDED, EntryType, LedgerEntry
from stellaorch.observability.tally import WindowTally

# Runs last seconds to hours; the default buckets stop at 10 s.
RUN_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Start times kept for runs still going; the oldest are dropped first so memory stays bounded.
MAX_TRACKED_RUNS = 100_000


class OrchestratorMetrics:
    """The metric families SPEC §6 names, fed by `observe` (ledger) and `observe_request`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._run_starts: OrderedDict[str, int] = OrderedDict()
        # The API availability SLO's figures: every request this process answered (5xx: bad).
        self.request_tally = WindowTally(max_keys=1)
        self._define_run_metrics()
        self._define_http_metrics()
        self._handlers: dict[str, Callable[[LedgerEntry], None]] = {
            EntryType.RUN_CREATED: self._count_run,
            EntryType.RUN_STARTED: self._remember_start,
            **dict.fromkeys(RUN_ENDED, self._finish_run),
            EntryType.STEP_RUNNING: self._count_lease,
            EntryType.STEP_RETRYING: self._count_retry,
            EntryType.STEP_FAILED: self._count_lost_lease,
        }

    def _define_run_metrics(self) -> None:
        self.runs = Counter(
            "orchestrator_runs_total",
            "Runs created (status=queued) and runs that reached a terminal status.",
            ["tenant", "status"],
            registry=self.registry,
        )
        self.step_retries = Counter(
            "orchestrator_step_retries_total",
            "Step attempts that failed or were lost and were queued again.",
            ["tenant"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "orchestrator_run_duration_seconds",
            "Wall time of finished runs from start to terminal status.",
            ["tenant"],
            buckets=RUN_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.leases_granted = Counter(
            "orchestrator_leases_granted_total",
            "Step leases granted to workers (one per attempt started).",
            ["tenant"],
            registry=self.registry,
        )
        self.leases_lost = Counter(
            "orchestrator_leases_lost_total",
            "Step leases that expired before the worker reported the attempt.",
            ["tenant"],
            registry=self.registry,
        )

    def _define_http_metrics(self) -> None:
        self.http_requests = Counter(
            "orchestrator_http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )

    def observe(self, entry: LedgerEntry) -> None:
        """Account for one committed ledger entry (an EventBus listener: quick, never raises)."""
        handler = self._handlers.get(entry.entry_type)
        if handler is not None:
            handler(entry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Account for one finished HTTP request."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)
        self.request_tally.count("*", time.time_ns() // 1000, bad=status >= 500)

    def _count_run(self, entry: LedgerEntry) -> None:
        self.runs.labels(entry.tenant, entry.status).inc()

    def _remember_start(self, entry: LedgerEntry) -> None:
        self._run_starts[entry.run_id] = entry.ts_us
        while len(self._run_starts) > MAX_TRACKED_RUNS:
            self._run_starts.popitem(last=False)

    def _finish_run(self, entry: LedgerEntry) -> None:
        self._count_run(entry)
        started = self._run_starts.pop(entry.run_id, None)
        # A run cancelled before it started never ran, and one started by another process
        # has no start seen here: neither has a duration this process can vouch for.
        if started is not None:
            self.run_duration.labels(entry.tenant).observe(max(0, entry.ts_us - started) / 1e6)

    def _count_lease(self, entry: LedgerEntry) -> None:
        self.leases_granted.labels(entry.tenant).inc()

    def _count_retry(self, entry: LedgerEntry) -> None:
        self.step_retries.labels(entry.tenant).inc()
        self._count_lost_lease(entry)

    def _count_lost_lease(self, entry: LedgerEntry) -> None:
        # A lost attempt is recorded on the retry, or on the failure once retries run out.
        if entry.data.get("attemptStatus") == "lost":
            self.leases_lost.labels(entry.tenant).inc()
