"""A segment offer from the central team to a customer's card and back: a real hub and edge
(in-process uvicorn), Mosquitto, SQLite on both sides.

The hub decides who is in the segment and sends the store the eligible subjects; the edge
must show the offer to those customers only, and a redemption must come back to the hub
with its offer id (the hub page counts redemptions per store).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe
from edge.probe import wait_until
from edge.topics import Topics
from hub.devtools import EmbeddedHub, hub_settings
from tests.sync_env import (
    CHAIN,
    checkin_token,
    edge_settings,
    import_members,
    list_products,
    shelf,
    subject_of,
)

PRODUCTS = shelf(6, stock=20, price=lambda i: 10.0 * i)
ANA = {"loyalty_number": "L-2001", "first_name": "Ana", "tier": "gold", "home_store": "s001"}
BEN = {"loyalty_number": "L-2002", "first_name": "Ben", "tier": "silver", "home_store": "s001"}
GOLD = {"all": [{"field": "tier", "op": "in", "value": ["gold"]}]}


def check_in(edge: EmbeddedEdge, hub: EmbeddedHub, subject: str) -> dict[str, Any]:
    """A kiosk check-in with a token the hub minted; the staff card it produced."""
    answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
        "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(),
        "token": checkin_token(hub.app_backend(), subject, "s001")})
    assert answer.status_code == 200, answer.text
    card: dict[str, Any] = answer.json()["card"]
    return card


def redeemed_at_hub(db: Path, event_id: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT json_extract(payload, '$.action'), json_extract(payload, '$.offer_id') "
            "FROM events WHERE event_id = ?", (event_id,)).fetchall()
    finally:
        conn.close()


def test_a_segment_offer_reaches_its_members_card_and_the_redemption_the_hub(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    ana, ben = subject_of(ANA["loyalty_number"]), subject_of(BEN["loyalty_number"])
    settings = hub_settings(tmp_path, chain=CHAIN)
    with EmbeddedHub(tmp_path, stores=("s001",), settings=settings) as hub:
        admin = hub.admin()
        import_members(admin, [ANA, BEN])
        list_products(admin, "s001", PRODUCTS)
        admin.put("/v1/segments/gold", json={"rule": GOLD}).raise_for_status()
        now = time.time()
        for category in ("tea", "cake"):
            admin.put(f"/v1/offers/gold-{category}", json={
                "category": category, "discount_pct": 20, "valid_from": now - 60,
                "valid_to": now + 7 * 86_400, "segment": "gold", "stores": ["s001"],
            }).raise_for_status()
        edge_cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port)
        with EmbeddedEdge(edge_cfg) as edge:
            store = edge.runtime.store

            def targeted() -> bool:
                _, book = store.reader().offer_book(time.time())
                found = [o for group in book.by_category.values() for o in group]
                return len(found) == 2 and all(o.subjects == {ana} for o in found)

            wait_until(lambda: store.get_profile(ana) and store.get_profile(ben)
                       and len(store.catalog()) == len(PRODUCTS), 15)
            wait_until(targeted, 10)
            wait_until(lambda: edge.runtime.service.verifier.key_ids, 10)

            card = check_in(edge, hub, ana)
            assert card["suggestions"]
            for s in card["suggestions"]:
                assert s["offer"]["offer_id"] == f"gold-{s['category']}"
                assert s["offer"]["price_after"] == round(s["price"] * 0.8, 2)
                assert s["reasons"][0]["kind"] == "member_offer"
            others = check_in(edge, hub, ben)["suggestions"]  # not gold: no offer
            assert others and all(s["offer"] is None for s in others)

            first = card["suggestions"][0]
            event_id = uuid.uuid4().hex
            with MqttProbe(broker.host, broker.port) as app:
                app.publish(Topics(CHAIN, "s001").feedback(ana), {
                    "v": 1, "event_id": event_id, "ts": time.time(), "subject": ana,
                    "visit_id": card["visit_id"], "product_id": first["product_id"],
                    "action": "redeemed", "channel": "app",
                    "offer_id": first["offer"]["offer_id"]})
            db = settings[0].db_path
            assert wait_until(lambda: redeemed_at_hub(db, event_id), 15) == [
                ("redeemed", first["offer"]["offer_id"])]
            overview = admin.get("/v1/admin/overview").json()
            kpis = next(s["kpis"] for s in overview["stores"] if s["store"] == "s001")
            assert kpis["redeemed"] == 1
