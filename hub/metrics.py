"""Prometheus metrics of one hub process (``GET /metrics``, roles admin and viewer).

One registry per app (``create_app`` makes a ``HubMetrics``; nothing at import time), so
several hubs can live in one test process. Three kinds of figures:

- counters the code moves where things happen: requests and their latency (``hub.metrics_http``,
  an ASGI middleware, by route *template*), auth refusals by reason and rate-limited requests
  by limiter (``hub.auth``), events accepted / duplicate / refused per store
  (``hub.api_sync``), feed pages per feed, check-in tokens issued / refused by reason, rows the
  retention sweep deleted per table (``hub.retention_sweep``);
- gauges read from SQLite at scrape time (``StateCollector``: per-store last-sync age, lag,
  outbox, erasures not yet acknowledged, model rollout), a handful of indexed reads;
- nothing else: a label never carries a subject, a name or free text. Its values come from
  code constants, route templates, registered store ids (a store key only reaches its own
  store), or model versions; anything else is folded into one value (``unmatched``,
  ``other``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
HOLD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # refusal reasons are code constants
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})

# route template -> feed name (pages counted on a 2xx answer)
FEEDS = {
    "/v1/stores/{store}/feed/profiles": "profiles",
    "/v1/stores/{store}/erasures": "erasures",
    "/v1/stores/{store}/feed/catalog": "catalog",
    "/v1/stores/{store}/feed/offers": "offers",
}
CHECKIN_ROUTE = ("POST", "/v1/tokens/checkin")


def reason_label(reason: Any) -> str:
    """A refusal reason as a label value: a code constant, else ``other``."""
    return reason if isinstance(reason, str) and REASON.match(reason) else "other"


class HubMetrics:
    """Every counter/gauge the hub exposes; ``StateCollector`` adds the scrape-time gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("storeside_hub_requests_total",
                                "HTTP requests by route template, method and status class",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("storeside_hub_request_seconds",
                                 "HTTP request latency by route template", ("route", "method"),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.refusals = Counter("storeside_hub_refusals_total",
                                "4xx answers by route template and the reason they gave",
                                ("route", "reason"), registry=r)
        self.auth_refused = Counter("storeside_hub_auth_refused_total",
                                    "Requests refused by auth (401/403)", ("reason",), registry=r)
        self.rate_limited = Counter("storeside_hub_rate_limited_total",
                                    "Requests refused by a rate limit", ("limiter",), registry=r)
        self.events = Counter("storeside_hub_events_total",
                              "Store events pushed to the hub, by outcome",
                              ("store", "outcome"), registry=r)
        self.feed_pages = Counter("storeside_hub_feed_pages_total",
                                  "Feed pages served (2xx), by feed", ("feed",), registry=r)
        self.checkin_tokens = Counter("storeside_hub_checkin_tokens_total",
                                      "Check-in tokens: issued, or the refusal reason",
                                      ("outcome",), registry=r)
        self.retention_rows = Counter("storeside_hub_retention_rows_deleted_total",
                                      "Rows the hub retention sweep deleted, by table",
                                      ("table",), registry=r)
        self.retention_last = Gauge("storeside_hub_retention_last_sweep_timestamp_seconds",
                                    "When the last hub retention sweep finished (epoch s)",
                                    registry=r)
        self.retention_hold = Histogram("storeside_hub_retention_batch_hold_seconds",
                                        "Write-lock hold of one retention delete batch",
                                        buckets=HOLD_BUCKETS, registry=r)

    def watch(self, context_of: Callable[[], Any]) -> None:
        """Add the scrape-time gauges, read from the context ``context_of()`` returns
        (None while the hub starts: no gauges then)."""
        self.registry.register(StateCollector(context_of))

    def count_answer(self, method: str, route: str | None, status: int,
                     reason: Any = None, seconds: float | None = None) -> None:
        """One finished request (the middleware): requests, latency, refusals, feeds,
        check-ins. ``route`` is the matched template or None."""
        label = route or "unmatched"
        method = method if method in METHODS else "other"
        self.requests.labels(label, method, f"{status // 100}xx").inc()
        if seconds is not None:
            self.latency.labels(label, method).observe(seconds)
        if 400 <= status < 500:
            self.refusals.labels(label, reason_label(reason)).inc()
        if route in FEEDS and 200 <= status < 300:
            self.feed_pages.labels(FEEDS[route]).inc()
        if (method, route) == CHECKIN_ROUTE:
            outcome = "issued" if 200 <= status < 300 else reason_label(reason)
            self.checkin_tokens.labels(outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, labels: Sequence[str], rows: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for *values, value in rows:
        family.add_metric([str(v) for v in values], float(value))
    return family


class StateCollector(Collector):
    """Gauges computed at scrape time from the hub's tables (one read snapshot)."""

    def __init__(self, context_of: Callable[[], Any]) -> None:
        self.context_of = context_of

    def collect(self) -> Iterator[Metric]:
        context = self.context_of()
        if context is None:
            return
        try:
            families = state_gauges(context.db)
        except Exception:  # a scrape must not fail because one read did
            logger.exception("hub state gauges could not be read")
            return
        yield from families


def state_gauges(db: Any) -> list[GaugeMetricFamily]:
    """Per store: last-sync age, lag, outbox, erasures it has not acknowledged, its model
    assignment; and the chain's erasure count. Stores are the registered ones only."""
    now = db.clock()
    with db.read() as conn:
        status = conn.execute(
            "SELECT s.store_id, st.received_at, st.lag_changes, st.outbox_pending "
            "FROM stores s LEFT JOIN store_status st USING (store_id) ORDER BY s.store_id"
        ).fetchall()
        erasures = int(conn.execute("SELECT COUNT(*) FROM erasures").fetchone()[0])
        acked = dict(conn.execute(
            "SELECT store, COUNT(*) FROM erasure_acks WHERE store IN "
            "(SELECT store_id FROM stores) GROUP BY store").fetchall())
        try:
            rollout = conn.execute(
                "SELECT a.store, a.version, a.stage FROM model_assignments a "
                "JOIN stores s ON s.store_id = a.store ORDER BY a.store").fetchall()
        except Exception:  # a hub without the model-rollout part
            rollout = []
    stores = [r[0] for r in status]
    return [
        _gauge("storeside_hub_stores", "Registered stores", (), [(len(stores),)]),
        _gauge("storeside_hub_store_last_sync_age_seconds",
               "Seconds since the store's last heartbeat (absent: never synced)", ("store",),
               [(r[0], max(0.0, now - r[1])) for r in status if r[1] is not None]),
        _gauge("storeside_hub_store_lag_changes",
               "Changes the store's profile feed cursor is behind the hub", ("store",),
               [(r[0], r[2]) for r in status if r[2] is not None]),
        _gauge("storeside_hub_store_outbox_pending",
               "Events waiting in the store's outbox (its last heartbeat)", ("store",),
               [(r[0], r[3]) for r in status if r[3] is not None]),
        _gauge("storeside_hub_erasures", "Erasure records (kept for good)", (), [(erasures,)]),
        _gauge("storeside_hub_erasures_pending", "Erasures the store has not acknowledged",
               ("store",), [(s, erasures - int(acked.get(s, 0))) for s in stores]),
        _gauge("storeside_hub_store_model", "1 per store: its assigned model and stage",
               ("store", "version", "stage"), [(s, v, st, 1) for s, v, st in rollout]),
    ]


# ---------------------------------------------------------------------- the route

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format (roles admin, viewer; a scraper gets a viewer key)."""
    hub_metrics: HubMetrics = request.app.state.metrics
    return Response(hub_metrics.render(), media_type=CONTENT_TYPE)
