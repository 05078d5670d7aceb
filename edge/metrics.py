"""Prometheus metrics of one edge process.

A registry per app (not the global one) so several edges can live in one test process.
``MetricSet`` is the one place that binds a metric to that registry; ``EdgeMetrics`` and
``edge.sync_metrics.SyncMetrics`` only declare names, help texts and labels.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class MetricSet:
    """Metrics declared on one registry (a fresh private one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, *labels: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EdgeMetrics(MetricSet):
    """Every counter/gauge the edge exposes on ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        counter, gauge, histogram = self.counter, self.gauge, self.histogram
        self.messages_received = counter(
            "storeside_messages_received_total", "Inbound messages by kind", "kind"
        )
        self.messages_handled = counter(
            "storeside_messages_handled_total", "Inbound messages handled", "kind"
        )
        self.duplicates = counter(
            "storeside_duplicate_events_total", "Events ignored as already handled", "kind"
        )
        self.dead_letters = counter(
            "storeside_dead_letters_total", "Inbound messages rejected", "kind", "reason"
        )
        self.tokens_rejected = counter(
            "storeside_tokens_rejected_total", "Check-in tokens refused", "reason"
        )
        self.rate_limited = counter(  # edge.api_auth, edge.api, edge.service (issue 6)
            "storeside_rate_limited_total", "Requests refused by a rate limit", "endpoint"
        )
        self.auth_refused = counter(
            "storeside_auth_refused_total", "API requests refused by auth", "reason"
        )
        self.queue_dropped = counter(
            "storeside_queue_dropped_total", "Lossy (QoS 0) messages dropped on a full queue",
            "kind",
        )
        self.queue_deferred = counter(
            "storeside_queue_deferred_total",
            "QoS 1 messages refused by a full queue, left un-acked for redelivery", "kind",
        )
        self.queue_depth = gauge("storeside_queue_depth", "Messages waiting for the worker")
        self.handle_seconds = histogram(
            "storeside_handle_seconds", "Time to handle one inbound message", "kind"
        )
        self.ranking_seconds = histogram(
            "storeside_ranking_seconds", "Candidates → features → model → rules"
        )
        self.recommendations = counter(
            "storeside_recommendations_total", "Recommendations delivered", "channel", "source"
        )
        self.app_offers_blocked = counter(
            "storeside_app_offers_blocked_total", "App offers not sent, by rule", "reason"
        )
        self.model_loaded = gauge(
            "storeside_model_loaded", "1 when a model bundle serves, 0 when degraded to popular"
        )
        self.outbox_pending = gauge(
            "storeside_outbox_pending", "Events waiting to be forwarded to the hub"
        )
        self.mqtt_connected = gauge(
            "storeside_mqtt_connected", "1 while connected to the broker"
        )
        self.mqtt_connect_failures = counter(
            "storeside_mqtt_connect_failures_total",
            "Broker connections refused (bad CONNACK / SUBACK) or unreachable", "reason",
        )
        self.mqtt_disconnects = counter(
            "storeside_mqtt_disconnects_total", "Broker connections lost or closed"
        )
        self.pairing_attempts = counter(
            "storeside_pairing_attempts_total",
            "Tablet pairing code redemptions, by outcome (paired, refusals, rate_limited)",
            "outcome",
        )
        self.sse_clients = gauge(
            "storeside_sse_clients", "Tablets listening on the live stream"
        )
