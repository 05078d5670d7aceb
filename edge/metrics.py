"""Prometheus metrics of one edge process.

A registry per app (not the global one) so several edges can live in one test process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class EdgeMetrics:
    """Every counter/gauge the edge exposes on ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "storeside_messages_received_total", "Inbound messages by kind", ["kind"], registry=r
        )
        self.messages_handled = Counter(
            "storeside_messages_handled_total", "Inbound messages handled", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "storeside_duplicate_events_total", "Events ignored as already handled", ["kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "storeside_dead_letters_total", "Inbound messages rejected", ["kind", "reason"],
            registry=r,
        )
        self.tokens_rejected = Counter(
            "storeside_tokens_rejected_total", "Check-in tokens refused", ["reason"], registry=r
        )
        self.queue_dropped = Counter(
            "storeside_queue_dropped_total", "Lossy (QoS 0) messages dropped on a full queue",
            ["kind"], registry=r,
        )
        self.queue_deferred = Counter(
            "storeside_queue_deferred_total",
            "QoS 1 messages refused by a full queue, left un-acked for redelivery", ["kind"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "storeside_queue_depth", "Messages waiting for the worker", registry=r
        )
        self.handle_seconds = Histogram(
            "storeside_handle_seconds", "Time to handle one inbound message", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ranking_seconds = Histogram(
            "storeside_ranking_seconds", "Candidates → features → model → rules",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.recommendations = Counter(
            "storeside_recommendations_total", "Recommendations delivered",
            ["channel", "source"], registry=r,
        )
        self.app_offers_blocked = Counter(
            "storeside_app_offers_blocked_total", "App offers not sent, by rule", ["reason"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "storeside_model_loaded", "1 when a model bundle serves, 0 when degraded to popular",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "storeside_outbox_pending", "Events waiting to be forwarded to the hub", registry=r
        )
        self.mqtt_connected = Gauge(
            "storeside_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.mqtt_connect_failures = Counter(
            "storeside_mqtt_connect_failures_total",
            "Broker connections refused (bad CONNACK / SUBACK) or unreachable", ["reason"],
            registry=r,
        )
        self.mqtt_disconnects = Counter(
            "storeside_mqtt_disconnects_total", "Broker connections lost or closed", registry=r
        )
        self.sse_clients = Gauge(
            "storeside_sse_clients", "Tablets listening on the live stream", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
