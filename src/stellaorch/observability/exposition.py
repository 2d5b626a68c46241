"""The Prometheus text a caller may see: the app's metrics plus scrape-time gauges, restricted
to one tenant's samples unless the caller may see every tenant."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The format `generate_latest` writes (text 0.0.4), whatever the library's newest one is.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def queue_depth_family(depths: Mapping[str, int]) -> GaugeMetricFamily:
    """`orchestrator_queue_depth{tenant}`: waiting queue items per tenant, read at scrape."""
    family = GaugeMetricFamily(
        "orchestrator_queue_depth",
        "Queued step attempts waiting for a worker, per tenant.",
        labels=["tenant"],
    )
    for tenant in sorted(depths):
        family.add_metric([tenant], depths[tenant])
    return family


def queue_age_family(oldest_us: Mapping[str, int | None], now_us: int) -> GaugeMetricFamily:
    """`orchestrator_queue_oldest_age_seconds{tenant}`: how long the oldest waiting item has
    waited (0 for an empty queue), read at scrape."""
    family = GaugeMetricFamily(
        "orchestrator_queue_oldest_age_seconds",
        "Seconds the oldest queued step attempt of the tenant has waited (0: none waiting).",
        labels=["tenant"],
    )
    for tenant in sorted(oldest_us):
        since = oldest_us[tenant]
        family.add_metric([tenant], 0.0 if since is None else max(0, now_us - since) / 1e6)
    return family


def store_runs_family(runs: Iterable[tuple[str, str, int]]) -> GaugeMetricFamily:
    """`orchestrator_store_runs{tenant,status}`: runs in the store by current status.

    Read from the store, so every process reports the same figures, unlike the per-process
    `orchestrator_runs_total` counters (aggregate it with `max`, never `sum`).
    """
    family = GaugeMetricFamily(
        "orchestrator_store_runs",
        "Runs in the store by tenant and current status (store-wide, read at scrape).",
        labels=["tenant", "status"],
    )
    for tenant, status, count in runs:
        family.add_metric([tenant, status], count)
    return family


def worker_families(live: int, slots: int, busy: int) -> list[GaugeMetricFamily]:
    """Live workers of the registry and their slots: infrastructure totals, no tenant label."""
    return [
        GaugeMetricFamily(
            "orchestrator_workers_live",
            "Worker processes heard from within the registry TTL (store-wide).",
            value=live,
        ),
        GaugeMetricFamily(
            "orchestrator_worker_slots",
            "Concurrency of the live workers together (store-wide).",
            value=slots,
        ),
        GaugeMetricFamily(
            "orchestrator_worker_slots_in_use",
            "Slots of the live workers running an attempt at their last heartbeat (store-wide).",
            value=busy,
        ),
    ]


def for_tenant(family: Metric, tenant: str) -> Metric:
    """A copy of `family` without the samples of other tenants (untenanted samples stay)."""
    kept = Metric(family.name, family.documentation, family.type, family.unit)
    kept.samples = [s for s in family.samples if s.labels.get("tenant", tenant) == tenant]
    return kept


class Scrape(Collector):
    """One scrape: the given collectors' families, filtered to `tenant` when one is set."""

    def __init__(
        self, sources: Iterable[Collector], extra: Iterable[Metric], tenant: str | None
    ) -> None:
        self._sources = list(sources)
        self._extra = list(extra)
        self._tenant = tenant

    def collect(self) -> Iterator[Metric]:
        """Every family of the sources and the extras, restricted to the tenant if any."""
        families = [f for source in self._sources for f in source.collect()] + self._extra
        for family in families:
            yield family if self._tenant is None else for_tenant(family, self._tenant)


def render(sources: Iterable[Collector], extra: Iterable[Metric], tenant: str | None) -> bytes:
    """The Prometheus text exposition of one scrape."""
    return generate_latest(Scrape(sources, extra, tenant))
