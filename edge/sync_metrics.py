"""Prometheus metrics of the edge's hub sync, on the edge's own registry.

Kept beside (not inside) ``EdgeMetrics`` so a standalone edge exposes no sync series at all,
and the 50 simulated stores of ``scripts/bench_sync`` each get a private registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.sync_plan import FEEDS


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.staleness = Gauge(
            "storeside_sync_staleness_seconds",
            "Seconds since a hub feed was last read to its end (+Inf: never)", ["feed"],
            registry=r,
        )
        self.errors = Counter(
            "storeside_sync_errors_total", "Failed sync calls by job and kind of failure",
            ["job", "error"], registry=r,
        )
        self.items_applied = Counter(
            "storeside_sync_items_applied_total", "Feed items applied to the local cache",
            ["feed"], registry=r,
        )
        self.bad_items = Counter(
            "storeside_sync_bad_items_total", "Feed items skipped as malformed", ["feed"],
            registry=r,
        )
        self.pushed = Counter(
            "storeside_outbox_pushed_total", "Outbox events the hub answered for, by answer",
            ["result"], registry=r,
        )
        self.hub_connected = Gauge(
            "storeside_hub_connected", "1 while the last call to the hub got an answer",
            registry=r,
        )
        self.erasures_applied = Counter(
            "storeside_erasures_applied_total", "Erasures applied on this device", registry=r
        )
        self.erasure_acks_pending = Gauge(
            "storeside_erasure_acks_pending", "Erasures applied but not yet confirmed by the hub",
            registry=r,
        )
        self.announces = Counter(
            "storeside_sync_announces_total", "Geofence announces to the hub, by outcome",
            ["result"], registry=r,
        )
        self.hub_keys = Gauge(
            "storeside_sync_hub_keys", "Check-in public keys received from the hub", registry=r
        )

    def watch_staleness(self, staleness_of: Callable[[str], float | None]) -> None:
        """Staleness is computed when scraped, so it keeps growing while the hub is away."""
        for feed in FEEDS:
            self.staleness.labels(feed).set_function(
                lambda feed=feed: _or_inf(staleness_of(feed))  # type: ignore[misc]
            )


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value
