"""Store offers on a real edge (Mosquitto, SQLite, onnxruntime, uvicorn): what staff and the
app see once an offers feed page lands, who gets a segment offer, when an offer stops, and
that a redemption names its offer on the way to the hub. Offers are written the way the hub
sync writes them (``EdgeStore.apply_offers_page``); the hub itself is in test_offers_sync.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe, wait_until
from edge.rules import RulesConfig
from edge.store import EdgeStore
from edge.sync_items import OfferUpsert, Removal
from tests.edge_env import EdgeEnv, make_env, new_id
from tests.test_edge_e2e import check_in as checked_in

# Offers at any hour and relevance, and caps loose enough for a few re-rankings per visit:
# these tests are about which offer shows, not about the caps (tests/test_rules.py).
RULES = RulesConfig(quiet_hours=(0, 0), app_offer_min_relevance=0.0, max_item_shows_per_visit=20,
                    max_impressions_per_day=500, max_app_offers_per_visit=20,
                    max_app_offers_per_day=50)


@pytest.fixture()
def env(tmp_path: Path, tafeng_zip: Path, broker: PrivateBroker) -> EdgeEnv:
    env = make_env(tmp_path, tafeng_zip, broker.port, n_products=200, n_members=12, rules=RULES)
    with EdgeStore(env.settings.db_path) as store:  # the seed's offers would blur the picture
        feed(store, removals=[o.offer_id for o in store.active_offers(time.time())])
    return env


@pytest.fixture()
def edge(env: EdgeEnv) -> Iterator[EmbeddedEdge]:
    with EmbeddedEdge(env.settings) as running:
        yield running


@pytest.fixture()
def probe(broker: PrivateBroker, env: EdgeEnv) -> Iterator[MqttProbe]:
    prefix = env.topics.prefix
    with MqttProbe(broker.host, broker.port,
                   [f"{prefix}/staff/recommendations", f"{prefix}/app/+/offers"]) as running:
        yield running


def feed(
    store: EdgeStore, upserts: Sequence[OfferUpsert] = (), removals: Sequence[str] = ()
) -> None:
    """One offers feed page, applied as the hub sync applies it."""
    store.apply_offers_page(list(upserts), [Removal(r, "deleted") for r in removals],
                            cursor="0", done_at=None)


def offer(oid: str, *, product: str | None = None, category: str | None = None,
          pct: float = 20.0, ttl: float = 3600.0, subjects: list[str] | None = None) -> OfferUpsert:
    now = time.time()
    return OfferUpsert(oid, product, category, pct, now - 60, now + ttl,
                       "seg" if subjects is not None else None,
                       tuple(subjects) if subjects is not None else None)


def card_after(probe: MqttProbe, subject: str, cause: str) -> dict[str, Any]:
    return probe.wait_for(
        lambda r: r.topic.endswith("/staff/recommendations")
        and r.payload["subject"] == subject and r.payload["trigger_event_id"] == cause,
        timeout=10,
    ).payload


def check_in(env: EdgeEnv, probe: MqttProbe, subject: str, **token: Any) -> dict[str, Any]:
    card: dict[str, Any] = checked_in(env, probe, subject, **token).payload
    return card


def rerank(env: EdgeEnv, probe: MqttProbe, card: dict[str, Any]) -> dict[str, Any]:
    """Staff tap "accepted" on the last suggestion: the edge ranks the visit again."""
    event_id = new_id()
    probe.publish(env.topics.feedback(), {
        "v": 1, "event_id": event_id, "ts": time.time(), "subject": card["subject"],
        "visit_id": card["visit_id"], "product_id": card["suggestions"][-1]["product_id"],
        "action": "accepted", "channel": "staff"})
    return card_after(probe, card["subject"], event_id)


def offers_on(card: dict[str, Any]) -> dict[str, str | None]:
    return {s["product_id"]: s["offer"] and s["offer"]["offer_id"] for s in card["suggestions"]}


def test_an_item_offer_reaches_the_card_and_the_app_and_its_redemption_the_outbox(
    edge, env, probe
) -> None:
    subject = env.seed.subjects[0]
    first = check_in(env, probe, subject)
    assert all(s["offer"] is None for s in first["suggestions"])
    top = first["suggestions"][0]
    feed(edge.runtime.store, [offer("o-item", product=top["product_id"], pct=15)])

    card = rerank(env, probe, first)
    shown = next(s for s in card["suggestions"] if s["product_id"] == top["product_id"])
    after = round(top["price"] * 0.85, 2)
    assert shown["price"] == top["price"]  # the list price, the offer beside it
    assert shown["offer"] == {"offer_id": "o-item", "discount_pct": 15.0,
                              "list_price": top["price"], "price_after": after,
                              "valid_to": shown["offer"]["valid_to"]}
    assert shown["reasons"][0]["kind"] == "offer"
    assert shown["reasons"][0]["text"].startswith("15% off until ")
    assert offers_on(card) == {**dict.fromkeys(offers_on(card)), top["product_id"]: "o-item"}

    app = probe.wait_for(lambda r: r.topic == env.topics.app_offers(subject)
                         and r.payload["offer_id"] == "o-item", 10).payload
    assert app["product_id"] == top["product_id"] and app["price"] == after
    assert app["offer"]["list_price"] == top["price"]
    assert app["reasons"][0]["kind"] == "offer"

    # the customer redeems the coupon in the app: its offer_id travels to the hub
    redeemed = new_id()
    probe.publish(env.topics.feedback(subject), {
        "v": 1, "event_id": redeemed, "ts": time.time(), "subject": subject,
        "visit_id": app["visit_id"], "product_id": app["product_id"], "action": "redeemed",
        "channel": "app", "offer_id": app["offer_id"]})
    queued = wait_until(lambda: [e for e in edge.runtime.store.outbox_pending(5000)
                                 if e.event_id == redeemed], 10)
    assert queued[0].kind == "feedback"
    assert queued[0].payload["action"] == "redeemed"
    assert queued[0].payload["offer_id"] == "o-item"


def test_a_category_offer_applies_to_every_item_of_that_category(edge, env, probe) -> None:
    subject = env.seed.subjects[1]
    first = check_in(env, probe, subject)
    category = first["suggestions"][0]["category"]
    feed(edge.runtime.store, [offer("o-cat", category=category, pct=10)])
    card = rerank(env, probe, first)
    assert any(s["category"] == category for s in card["suggestions"])
    for s in card["suggestions"]:
        if s["category"] == category:
            assert s["offer"]["offer_id"] == "o-cat"
            assert s["offer"]["price_after"] == round(s["price"] * 0.9, 2)
        else:
            assert s["offer"] is None


def test_a_segment_offer_reaches_only_its_subjects(edge, env, probe) -> None:
    member, other, no_consent = env.seed.subjects[2:5]
    cards = {
        member: check_in(env, probe, member),
        other: check_in(env, probe, other),
        # targeted too, but without personalize the edge may not use its membership
        no_consent: check_in(env, probe, no_consent, scopes=("staff_display", "app_offers")),
    }
    categories = sorted({s["category"] for c in cards.values() for s in c["suggestions"]})
    feed(edge.runtime.store, [offer(f"o-seg-{i}", category=c, subjects=[member, no_consent])
                              for i, c in enumerate(categories)])
    again = {subject: rerank(env, probe, card) for subject, card in cards.items()}

    for s in again[member]["suggestions"]:
        assert s["offer"] is not None and s["offer"]["offer_id"].startswith("o-seg-")
        assert s["reasons"][0]["kind"] == "member_offer"  # reveals membership: personal
        assert s["allowed_by"] == ["personalize"]
    assert set(offers_on(again[other]).values()) == {None}
    assert set(offers_on(again[no_consent]).values()) == {None}
    for s in again[no_consent]["suggestions"]:
        assert all(r["kind"] != "member_offer" for r in s["reasons"])


def test_an_expired_or_withdrawn_offer_is_gone_at_the_next_ranking(edge, env, probe) -> None:
    subject = env.seed.subjects[5]
    card = check_in(env, probe, subject)
    top = card["suggestions"][0]["product_id"]
    brief = offer("o-brief", product=top, ttl=2.0)
    feed(edge.runtime.store, [brief])
    card = rerank(env, probe, card)
    assert offers_on(card)[top] == "o-brief"
    wait_until(lambda: time.time() >= brief.valid_to, 5)  # the hub sends no delete in time
    card = rerank(env, probe, card)
    assert offers_on(card)[top] is None

    feed(edge.runtime.store, [offer("o-week", product=top)])
    card = rerank(env, probe, card)
    assert offers_on(card)[top] == "o-week"
    feed(edge.runtime.store, removals=["o-week"])  # withdrawn at the hub
    card = rerank(env, probe, card)
    assert offers_on(card)[top] is None


def test_reasons_name_products_not_ids(edge, env, probe) -> None:
    names = {item.product_id: item.name for item in edge.runtime.store.catalog()}
    partners: list[str] = []
    for subject in env.seed.subjects[6:12]:
        for s in check_in(env, probe, subject)["suggestions"]:
            for r in s["reasons"]:
                assert not any(pid in r["text"] for pid in names), r["text"]
                if r["kind"] == "copurchase":
                    partners.append(r["text"].removeprefix("often bought with "))
    assert partners, "some co-purchase reason is expected among six members' cards"
    assert set(partners) <= set(names.values())
