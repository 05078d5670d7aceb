"""Styles end to end on real parts: a catalog with variants goes hub → feed → edge over HTTP,
a check-in shows one suggestion per style with its other variants listed, and a dismiss of
one variant hides the whole style for the rest of the visit. Once more on the Ta-Feng store
with the real ONNX model scoring SKUs, and on the tablet page in headless Chromium."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from edge.broker import PrivateBroker
from edge.cards import variant_labels
from edge.devices import create_pairing_code
from edge.devtools import EmbeddedEdge, MqttProbe
from edge.probe import wait_until
from edge.rules import RulesConfig
from edge.store import CatalogItem, EdgeStore
from edge.topics import Topics
from hub.devtools import EmbeddedHub, hub_settings
from tests.edge_env import EdgeEnv, make_env
from tests.sync_env import CHAIN, checkin_token, edge_settings, import_members, subject_of

# product_id, name, category, style_id, stock (the mustard beanie is sold out)
PRODUCTS = [
    ("sku-a1", "Wool beanie, grey", "hats", "st-beanie", 12),
    ("sku-a2", "Wool beanie, navy", "hats", "st-beanie", 7),
    ("sku-a3", "Wool beanie, mustard", "hats", "st-beanie", 0),
    ("sku-b1", "Touchscreen gloves, black", "gloves", "st-gloves", 9),
    ("sku-b2", "Touchscreen gloves, tan", "gloves", "st-gloves", 4),
    ("sku-c1", "Stoneware mug", "kitchen", "", 20),
    ("sku-d1", "Scented candle, amber", "candles", "st-candle", 5),
    ("sku-d2", "Scented candle, fig & cedar", "candles", "st-candle", 6),
    ("sku-e1", "Earl Grey tea, 50 bags", "tea", "", 30),
    ("sku-f1", "Dark chocolate 70 % 100 g", "chocolate", "", 30),
]
ANA = {"loyalty_number": "L-2001", "first_name": "Ana", "tier": "gold", "home_store": "s001"}
ANY_HOUR = RulesConfig(quiet_hours=(0, 0), app_offer_min_relevance=0.0)
CHROMIUM = Path("/usr/bin/chromium")


def products_csv() -> str:
    lines = ["product_id,name,category,price,style_id"]
    lines += [f'{pid},"{name}",{category},19.99,{style}'
              for pid, name, category, style, _ in PRODUCTS]
    return "\n".join(lines) + "\n"


def dismiss(probe: MqttProbe, topics: Topics, card: dict[str, Any], product_id: str) -> None:
    probe.publish(topics.feedback(), {
        "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(), "subject": card["subject"],
        "visit_id": card["visit_id"], "product_id": product_id, "action": "dismissed",
        "channel": "staff"})


def refreshed(probe: MqttProbe, card: dict[str, Any]) -> dict[str, Any]:
    """The card the edge sends after a staff tap (trigger "refresh") for that visit."""
    received = probe.wait_for(
        lambda r: r.topic.endswith("/staff/recommendations")
        and r.payload["visit_id"] == card["visit_id"] and r.payload["trigger"] == "refresh", 10)
    payload: dict[str, Any] = received.payload
    return payload


def check_in(probe: MqttProbe, env: EdgeEnv, subject: str) -> dict[str, Any]:
    """An app check-in on MQTT; the staff card it caused."""
    payload = env.checkin_payload(subject)
    probe.publish(env.topics.checkin(subject), payload)
    received = probe.wait_for(lambda r: r.topic.endswith("/staff/recommendations") and
                              r.payload["trigger_event_id"] == payload["event_id"], 10)
    card: dict[str, Any] = received.payload
    return card


def test_hub_styles_reach_the_edge_and_a_check_in_shows_one_per_style(
        tmp_path: Path, broker: PrivateBroker) -> None:
    settings = hub_settings(tmp_path, chain=CHAIN)
    ana = subject_of(ANA["loyalty_number"])
    with EmbeddedHub(tmp_path, stores=("s001",), settings=settings) as hub:
        import_members(hub.admin(), [ANA])
        admin = hub.admin()
        admin.put("/v1/catalog/products", content=products_csv().encode(),
                  headers={"Content-Type": "text/csv"}).raise_for_status()
        admin.put("/v1/stores/s001/assortment", json={"items": [
            {"product_id": pid, "stock": stock} for pid, _, _, _, stock in PRODUCTS
        ]}).raise_for_status()
        cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port)
        cfg = cfg.model_copy(update={"rules": ANY_HOUR})
        topics = Topics(CHAIN, "s001")
        with EmbeddedEdge(cfg) as edge, MqttProbe(
                broker.host, broker.port, [topics.staff_recommendations]) as probe:
            store = edge.runtime.store
            wait_until(lambda: len(store.catalog()) == len(PRODUCTS), 15)
            assert {i.product_id: i.style_id for i in store.catalog()} == {
                pid: style or None for pid, _, _, style, _ in PRODUCTS}
            wait_until(lambda: store.get_profile(ana) is not None, 15)
            wait_until(lambda: edge.runtime.service.verifier.key_ids, 10)

            # no purchases yet: every score is equal and the list is in product id order,
            # so without styles it would open with two beanies and two pairs of gloves
            answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
                "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(),
                "token": checkin_token(hub.app_backend(), ana, "s001")})
            assert answer.status_code == 200, answer.text
            card = answer.json()["card"]
            sugs = {s["product_id"]: s for s in card["suggestions"]}
            assert list(sugs) == ["sku-a1", "sku-b1", "sku-c1", "sku-d1", "sku-e1"]
            assert sugs["sku-a1"]["variants"] == [  # the sold-out mustard is not offered
                {"product_id": "sku-a2", "name": "navy", "stock": 7}]
            assert sugs["sku-b1"]["variants"] == [
                {"product_id": "sku-b2", "name": "tan", "stock": 4}]
            assert sugs["sku-d1"]["variants"] == [
                {"product_id": "sku-d2", "name": "fig & cedar", "stock": 6}]
            assert sugs["sku-c1"]["variants"] == []

            # the customer turns down the grey beanie: no navy one either in this visit
            dismiss(probe, topics, card, "sku-a1")
            after = [s["product_id"] for s in refreshed(probe, card)["suggestions"]]
            assert after == ["sku-b1", "sku-c1", "sku-d1", "sku-e1", "sku-f1"]

            # a style change at the hub reaches the store like any other catalog change
            admin.put("/v1/catalog/products", json={"products": [
                {"product_id": "sku-f1", "name": "Dark chocolate 70 % 100 g",
                 "category": "chocolate", "price": 19.99, "style_id": "st-candle"}]},
            ).raise_for_status()
            wait_until(lambda: {i.product_id: i.style_id for i in store.catalog()}["sku-f1"]
                       == "st-candle", 10)


def styled_tafeng_store(tmp_path: Path, tafeng_zip: Path, port: int) -> tuple[
        EdgeEnv, dict[str, CatalogItem]]:
    """The Ta-Feng store with every three products of a category made one style, so a
    member's favourite category would otherwise fill slots with siblings."""
    env = make_env(tmp_path, tafeng_zip, port, n_products=120, rules=ANY_HOUR)
    with EdgeStore(env.settings.db_path) as store:
        counts: dict[str, int] = defaultdict(int)
        styled = []
        for item in store.catalog():
            n = counts[item.category or ""]
            counts[item.category or ""] += 1
            styled.append(CatalogItem(item.product_id, item.name, item.category, item.price,
                                      item.stock, item.zone, f"st-{item.category}-{n // 3}"))
        store.upsert_catalog(styled)
        return env, {i.product_id: i for i in store.catalog()}


def test_model_ranked_check_in_shows_one_per_style_and_a_dismiss_hides_it(
        tmp_path: Path, tafeng_zip: Path, broker: PrivateBroker) -> None:
    env, catalog = styled_tafeng_store(tmp_path, tafeng_zip, broker.port)
    style_of = {pid: item.style_id for pid, item in catalog.items()}
    with EmbeddedEdge(env.settings) as _, MqttProbe(
            broker.host, broker.port, [env.topics.staff_recommendations]) as probe:
        with_variants = 0
        for subject in env.seed.subjects[:6]:
            card = check_in(probe, env, subject)
            assert card["source"] == "model" and len(card["suggestions"]) == 5
            styles = [style_of[s["product_id"]] for s in card["suggestions"]]
            assert len(set(styles)) == len(styles), styles
            for s in card["suggestions"]:
                siblings = sorted(pid for pid, item in catalog.items()
                                  if item.style_id == style_of[s["product_id"]]
                                  and item.stock > 0 and pid != s["product_id"])
                assert sorted(v["product_id"] for v in s["variants"]) == siblings
                with_variants += bool(siblings)
        assert with_variants >= 5

        top = next(s for s in card["suggestions"] if s["variants"])  # a style of several
        dismiss(probe, env.topics, card, top["product_id"])
        after = refreshed(probe, card)["suggestions"]
        assert after and style_of[top["product_id"]] not in {
            style_of[s["product_id"]] for s in after}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_the_tablet_page_names_the_other_variants(
        tmp_path: Path, tafeng_zip: Path, broker: PrivateBroker) -> None:
    env, catalog = styled_tafeng_store(tmp_path, tafeng_zip, broker.port)
    subject = env.seed.subjects[0]
    with EmbeddedEdge(env.settings) as edge, MqttProbe(
            broker.host, broker.port, [env.topics.staff_recommendations]) as probe, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            code = create_pairing_code(env.settings.db_path, "styles tablet", 600)
            page.goto(f"{edge.url}/tablet/pair?code={code}")
            expect(page.locator("#conn")).to_have_attribute("data-state", "online",
                                                             timeout=5_000)
            sent = check_in(probe, env, subject)
            rows = page.locator(f'.card[data-subject="{subject}"] .sug')
            expect(rows).to_have_count(len(sent["suggestions"]), timeout=5_000)
            for i, s in enumerate(sent["suggestions"]):
                row = rows.nth(i)
                assert row.get_attribute("data-product-id") == s["product_id"]
                names = [v["name"] for v in s["variants"]]
                if names:
                    expect(row.locator(".sug-variants")).to_have_text(
                        "also in " + " · ".join(names))
                    siblings = [catalog[v["product_id"]].name for v in s["variants"]]
                    assert names == variant_labels(s["name"], siblings)
                else:
                    expect(row.locator(".sug-variants")).to_have_count(0)
            assert any(s["variants"] for s in sent["suggestions"])
            page.close()  # before the edge stops: an open live feed would hold it up
        finally:
            browser.close()
