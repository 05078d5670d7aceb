"""What the hub page shows: stores (sync, lag, model, health), rollout, erasures, KPIs.

The page polls ``GET /v1/admin/overview`` every few seconds, so everything here is a handful
of indexed reads in one snapshot per part. Health is derived (``store_health``, pure) from the
heartbeat every edge sends with each poll (~2 s), so a store that stops polling turns
``late`` after a minute and ``offline`` after five.

KPIs are counted from the events the stores pushed (``events`` table) over a window: check-ins
(``checkin``), suggestions shown (items of ``impression`` events), and feedback ``accepted`` /
``redeemed``. Rollout comes from the model-rollout part (``hub.model_registry``) when it is
installed; without it the page says "no rollout".
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from hub.catalog_store import CatalogStore
from hub.dsr import erasure_status
from hub.offer_store import OfferStore
from hub.segment_store import SegmentStore
from hub.storage import HubDB

logger = logging.getLogger(__name__)

LATE_AFTER_S = 60.0
OFFLINE_AFTER_S = 300.0
STALE_FEEDS_S = 300.0
MAX_ERASURES = 50

_KPI_SQL = (
    "SELECT store, "
    "SUM(kind = 'checkin'), "
    "SUM(CASE WHEN kind = 'impression' THEN "
    "    COALESCE(json_array_length(payload, '$.items'), 1) ELSE 0 END), "
    "SUM(kind = 'feedback' AND json_extract(payload, '$.action') = 'accepted'), "
    "SUM(kind = 'feedback' AND json_extract(payload, '$.action') = 'redeemed') "
    "FROM events WHERE created_at >= ? AND kind IN ('checkin', 'impression', 'feedback') "
    "GROUP BY store"
)


def store_health(status: Mapping[str, Any]) -> str:
    """``never`` (no heartbeat yet), ``offline`` / ``late`` (heartbeats stopped),
    ``degraded`` (no model: popular lists only), ``stale`` (its feeds are old), or ``ok``."""
    since = status.get("since_last_sync_s")
    if since is None:
        return "never"
    if since > OFFLINE_AFTER_S:
        return "offline"
    if since > LATE_AFTER_S:
        return "late"
    if status.get("state") == "degraded":
        return "degraded"
    staleness = status.get("staleness_s")
    if isinstance(staleness, int | float) and staleness > STALE_FEEDS_S:
        return "stale"
    return "ok"


def kpis(db: HubDB, since: float) -> dict[str, dict[str, int]]:
    with db.read() as conn:
        rows = conn.execute(_KPI_SQL, (since,)).fetchall()
    return {r[0]: {"checkins": int(r[1] or 0), "shown": int(r[2] or 0),
                   "accepted": int(r[3] or 0), "redeemed": int(r[4] or 0)} for r in rows}


def erasures(db: HubDB, limit: int = MAX_ERASURES) -> dict[str, Any]:
    """How many erasures every registered store acknowledged, and the latest ones store by
    store (``hub.dsr.erasure_status``; the subject is left out: the page does not need it)."""
    with db.read() as conn:
        total, complete = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM((SELECT COUNT(*) FROM erasure_acks k "
            " WHERE k.erasure_id = e.erasure_id AND k.store IN (SELECT store_id FROM stores))"
            " >= (SELECT COUNT(*) FROM stores)), 0) FROM erasures e").fetchone()
        latest = [r[0] for r in conn.execute(
            "SELECT erasure_id FROM erasures ORDER BY seq DESC LIMIT ?", (limit,))]
    items = []
    for erasure_id in latest:
        status = erasure_status(db, erasure_id)
        if status is not None:
            items.append({"erasure_id": erasure_id, "requested_at": status["requested_at"],
                          "acked": [a["store"] for a in status["acknowledged"]],
                          "pending": status["pending"]})
    return {"total": int(total), "complete": int(complete), "latest": items}


def rollout(db: HubDB) -> dict[str, Any]:
    """Model assignments per store, or ``available: False`` without the rollout part."""
    try:
        registry = importlib.import_module("hub.model_registry")
    except ModuleNotFoundError as exc:
        if exc.name != "hub.model_registry":
            raise
        return {"available": False, "stores": []}
    return {"available": True, "stores": registry.rollout_status(db)}


def overview(db: HubDB, *, chain: str, window_s: float) -> dict[str, Any]:
    now = db.clock()
    counts = kpis(db, now - window_s)
    zero = {"checkins": 0, "shown": 0, "accepted": 0, "redeemed": 0}
    stores = []
    for status in db.store_statuses():
        stores.append({**status, "health": store_health(status),
                       "kpis": counts.get(status["store"], zero)})
    with db.read() as conn:
        head = HubDB.current_seq(conn)
    return {
        "chain": chain, "generated_at": now, "hub_seq": head, "kpi_window_s": window_s,
        "stores": stores,
        "rollout": rollout(db),
        "erasures": erasures(db),
        "catalog": {**CatalogStore(db).counts(), **OfferStore(db).counts(),
                    "segments": SegmentStore(db).count()},
    }
