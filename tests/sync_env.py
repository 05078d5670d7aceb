"""Building blocks for hub ⇄ edge sync tests and ``scripts/bench_sync``: a real hub with
members and a catalog, edges linked to it, and the calls an app, a till and the central team
make. Nothing here sleeps: callers wait on conditions (``wait_until``)."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from edge.probe import wait_until
from edge.settings import EdgeSettings, HttpSettings, HubLinkSettings, MqttSettings
from models.identity import pseudonymous_id

CHAIN = "syncchain"
MEMBER_COLUMNS = (
    "loyalty_number", "first_name", "last_name", "email", "birthday", "tier", "home_store",
    "sizes", "brands", "consent_personalize", "consent_staff_display", "consent_app_offers",
)
# Every table an erasure must leave without a row of the member (checked on each edge).
ERASED_TABLES = ("profiles", "purchases", "aggregates", "impressions", "feedback", "visits",
                 "outbox")
# Fast enough for tests, same code paths as the defaults.
QUICK_LINK = {"poll_interval_s": 0.2, "push_interval_s": 0.2, "backoff_initial_s": 0.1,
              "backoff_max_s": 0.5, "timeout_s": 2.0}


def subject_of(loyalty_number: str) -> str:
    return pseudonymous_id(loyalty_number, CHAIN)


def members_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=MEMBER_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({
            "consent_personalize": "true", "consent_staff_display": "true",
            "consent_app_offers": "true", **row,
        })
    return out.getvalue()


def import_members(admin: httpx.Client, rows: list[dict[str, str]]) -> dict[str, Any]:
    answer = admin.post("/v1/members/import", content=members_csv(rows).encode(),
                        headers={"Content-Type": "text/csv"})
    answer.raise_for_status()
    report: dict[str, Any] = answer.json()
    assert not report["errors"], report["errors"]
    return report


def shelf(count: int, *, stock: int, price: Callable[[int], float]) -> list[dict[str, Any]]:
    """Products p1..p``count`` for ``list_products``, alternately tea and cake (so a category
    offer covers half of them), ``price(i)`` for product i."""
    return [
        {"product_id": f"p{i}", "name": f"Product {i}", "category": "tea" if i % 2 else "cake",
         "price": price(i), "stock": stock}
        for i in range(1, count + 1)
    ]


def list_products(admin: httpx.Client, store: str, products: list[dict[str, Any]]) -> None:
    """Products into the hub's catalog and the store's assortment (with stock)."""
    admin.put("/v1/catalog/products", json={"products": [
        {k: p[k] for k in ("product_id", "name", "category", "price")} for p in products
    ]}).raise_for_status()
    admin.put(f"/v1/stores/{store}/assortment", json={"items": [
        {"product_id": p["product_id"], "stock": p.get("stock", 10)} for p in products
    ]}).raise_for_status()


def edge_settings(tmp_path: Path, store: str, hub_url: str, store_key: str,
                  broker_port: int, **link: Any) -> EdgeSettings:
    return EdgeSettings(
        chain=CHAIN,
        store=store,
        db_path=tmp_path / f"edge-{store}.db",
        http=HttpSettings(port=0),  # a free port: several edges side by side
        mqtt=MqttSettings(port=broker_port, client_id=f"edge-{store}-{uuid.uuid4().hex[:6]}"),
        hub=HubLinkSettings(hub_url=hub_url, store_key=store_key, **{**QUICK_LINK, **link}),
        tick_interval_s=0.05,
    )


def pos_basket(subject: str | None, lines: list[tuple[str, int, float]],
               basket_id: str | None = None) -> dict[str, Any]:
    return {
        "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(),
        "basket_id": basket_id or f"b-{uuid.uuid4().hex[:12]}", "subject": subject,
        "lines": [{"product_id": p, "quantity": q, "unit_price": u} for p, q, u in lines],
    }


def checkin_token(app: httpx.Client, subject: str, store: str) -> str:
    answer = app.post("/v1/tokens/checkin", json={"subject": subject, "store": store})
    answer.raise_for_status()
    return str(answer.json()["token"])


def wait_status(edge_url: str, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The edge's /v1/status once ``predicate(status)`` holds."""
    def check() -> dict[str, Any] | None:
        status: dict[str, Any] = httpx.get(f"{edge_url}/v1/status", timeout=5).json()
        return status if predicate(status) else None

    result: dict[str, Any] = wait_until(check, timeout, interval=0.05)
    return result


def db_rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows of a hub or edge SQLite file, read-only (never writes beside the running process)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
