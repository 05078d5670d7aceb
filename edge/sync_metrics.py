"""Prometheus metrics of the edge's hub sync, on the edge's own registry.

Kept beside (not inside) ``EdgeMetrics`` so a standalone edge exposes no sync series at all,
and the 50 simulated stores of ``scripts/bench_sync`` each get a private registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from edge.metrics import MetricSet
from edge.sync_plan import FEEDS


class SyncMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        counter, gauge = self.counter, self.gauge
        self.staleness = gauge(
            "storeside_sync_staleness_seconds",
            "Seconds since a hub feed was last read to its end (+Inf: never)", "feed",
        )
        self.errors = counter(
            "storeside_sync_errors_total", "Failed sync calls by job and kind of failure",
            "job", "error",
        )
        self.items_applied = counter(
            "storeside_sync_items_applied_total", "Feed items applied to the local cache", "feed"
        )
        self.bad_items = counter(
            "storeside_sync_bad_items_total", "Feed items skipped as malformed", "feed"
        )
        self.pushed = counter(
            "storeside_outbox_pushed_total", "Outbox events the hub answered for, by answer",
            "result",
        )
        self.hub_connected = gauge(
            "storeside_hub_connected", "1 while the last call to the hub got an answer"
        )
        self.erasures_applied = counter(
            "storeside_erasures_applied_total", "Erasures applied on this device"
        )
        self.erasure_acks_pending = gauge(
            "storeside_erasure_acks_pending", "Erasures applied but not yet confirmed by the hub"
        )
        self.announces = counter(
            "storeside_sync_announces_total", "Geofence announces to the hub, by outcome",
            "result",
        )
        self.hub_keys = gauge(
            "storeside_sync_hub_keys", "Check-in public keys received from the hub"
        )

    def watch_staleness(self, staleness_of: Callable[[str], float | None]) -> None:
        """Staleness is computed when scraped, so it keeps growing while the hub is away."""
        for feed in FEEDS:
            self.staleness.labels(feed).set_function(
                lambda feed=feed: _or_inf(staleness_of(feed))  # type: ignore[misc]
            )


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value
