"""Offers, segments and the offers feed on a real hub (uvicorn + SQLite, a test clock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.devtools import EmbeddedHub
from hub.segments import DAY_S
from tests.hub_catalog_env import GOLD, T0, Clock, add_members, read_feed, start_hub


def offer(**kw: Any) -> dict[str, Any]:
    return {"product_id": "p-1", "discount_pct": 15, "valid_from": T0 - 60,
            "valid_to": T0 + 7 * DAY_S, **kw}


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def hub(tmp_path: Path, clock: Clock) -> Iterator[EmbeddedHub]:
    running = start_hub(tmp_path, ("s1", "s2", "s3"), clock)
    try:
        yield running
    finally:
        running.stop()


def ops(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["op"], i["offer_id"]) for i in items]


def test_offer_targets_stores_and_withdrawal_becomes_delete(hub: EmbeddedHub) -> None:
    with hub.admin() as admin, hub.store("s1") as s1, hub.store("s2") as s2:
        r = admin.put("/v1/offers/o-all", json=offer(title="Milk week"))
        assert r.status_code == 200 and r.json()["created"] is True
        assert r.json()["feed_items"] == 3
        admin.put("/v1/offers/o-s2", json=offer(category="dairy", product_id=None,
                                                stores=["s2"]))
        items, c1 = read_feed(s1, "s1", "offers")
        assert items == [{"op": "upsert", "seq": items[0]["seq"], "offer_id": "o-all",
                          "product_id": "p-1", "category": None, "discount_pct": 15.0,
                          "valid_from": T0 - 60, "valid_to": T0 + 7 * DAY_S,
                          "title": "Milk week"}]
        items, c2 = read_feed(s2, "s2", "offers")
        assert ops(items) == [("upsert", "o-all"), ("upsert", "o-s2")]

        # the same document again changes nothing; a new discount is re-sent everywhere
        assert admin.put("/v1/offers/o-all", json=offer(title="Milk week")).json()[
            "feed_items"] == 0
        admin.put("/v1/offers/o-all", json=offer(discount_pct=20))
        items, c1 = read_feed(s1, "s1", "offers", c1)
        assert [(i["offer_id"], i["discount_pct"]) for i in items] == [("o-all", 20.0)]
        # moving o-s2 from s2 to s1: a delete for s2, an upsert for s1
        admin.put("/v1/offers/o-s2", json=offer(category="dairy", product_id=None,
                                                stores=["s1"]))
        items, c1 = read_feed(s1, "s1", "offers", c1)
        assert ops(items) == [("upsert", "o-s2")]
        items, c2 = read_feed(s2, "s2", "offers", c2)
        assert ops(items) == [("upsert", "o-all"), ("delete", "o-s2")]
        # withdrawal: a delete in every store that held it; the record stays
        assert admin.delete("/v1/offers/o-all").json()["feed_items"] == 3
        items, c1 = read_feed(s1, "s1", "offers", c1)
        assert items == [{"op": "delete", "seq": items[0]["seq"], "offer_id": "o-all"}]
        listed = {o["offer_id"]: o for o in admin.get("/v1/offers").json()["offers"]}
        assert listed["o-all"]["status"] == "withdrawn" and listed["o-all"]["sent_to"] == []
        assert listed["o-s2"]["status"] == "active" and listed["o-s2"]["sent_to"] == ["s1"]
        # put again: live again
        admin.put("/v1/offers/o-all", json=offer())
        assert ops(read_feed(s1, "s1", "offers", c1)[0]) == [("upsert", "o-all")]
        assert admin.delete("/v1/offers/o-nope").status_code == 404


def test_expiry_and_new_store_are_picked_up_before_a_poll(hub: EmbeddedHub,
                                                          clock: Clock) -> None:
    with hub.admin() as admin, hub.store("s1") as s1:
        admin.put("/v1/offers/o-short", json=offer(valid_to=T0 + 3600))
        admin.put("/v1/offers/o-later", json=offer(valid_from=T0 + DAY_S,
                                                   valid_to=T0 + 2 * DAY_S))
        items, cursor = read_feed(s1, "s1", "offers")
        assert ops(items) == [("upsert", "o-short"), ("upsert", "o-later")]
        assert admin.get("/v1/offers/o-later").json()["status"] == "scheduled"
        clock.now = T0 + 3600 + 61  # expired, and past the refresh interval
        items, cursor = read_feed(s1, "s1", "offers", cursor)
        assert ops(items) == [("delete", "o-short")]
        assert admin.get("/v1/offers/o-short").json()["status"] == "expired"
        # a store registered after the offers were made gets the "every store" ones
        from hub.stores import add_store
        key = add_store(hub.context.db, "s9")
        with hub.client(key) as s9:
            assert ops(read_feed(s9, "s9", "offers")[0]) == [("upsert", "o-later")]


@pytest.mark.parametrize(("path", "body", "status", "detail"), [
    ("/v1/offers/o-1", offer(discount_pct=0), 422, {"reason": "bad_offer",
                                                    "field": "discount_pct"}),
    ("/v1/offers/o-1", offer(valid_to=T0 - 3600), 422, {"field": "valid_to"}),
    ("/v1/offers/o-1", offer(product_id=None), 422, {"field": "product_id"}),
    ("/v1/offers/o-1", offer(stores="s1"), 422, {"field": "stores"}),
    ("/v1/offers/o-1", offer(segment="nope"), 422, {"reason": "unknown_segment"}),
    ("/v1/offers/o-1", offer(offer_id="o-2"), 422, {"field": "offer_id"}),
    ("/v1/offers/bad id", offer(), 422, {"field": "offer_id"}),
    ("/v1/offers/o-1", [1, 2], 422, {"field": "body"}),
    ("/v1/segments/seg", {"rule": {"all": [{"field": "age", "op": ">", "value": 3}]}}, 422,
     {"reason": "bad_rule", "path": "rule.all[0].field"}),
    ("/v1/segments/seg", {"name": "x"}, 422, {"reason": "bad_rule", "path": "rule"}),
    ("/v1/segments/seg", {"rule": GOLD, "owner": "me"}, 422, {"reason": "bad_segment"}),
    ("/v1/segments/bad seg", {"rule": GOLD}, 422, {"reason": "bad_segment"}),
])
def test_bad_offers_and_segments_get_422_with_reasons(
    hub: EmbeddedHub, path: str, body: Any, status: int, detail: dict[str, Any],
) -> None:
    with hub.admin() as admin:
        r = admin.put(path, json=body)
        assert r.status_code == status, r.text
        got = r.json()["detail"]
        assert {k: got.get(k) for k in detail} == detail
        assert "message" in got


def test_segments_members_and_segment_offers(hub: EmbeddedHub, clock: Clock) -> None:
    db = hub.context.db
    recent = T0 - 3 * DAY_S
    subjects = add_members(db, [
        {"loyalty": "L1", "tier": "gold", "home_store": "s1", "baskets": 9,
         "total_spend": 900.0, "last_purchase_ts": recent},
        {"loyalty": "L2", "tier": "gold", "home_store": "s2", "baskets": 5,
         "total_spend": 650.0, "last_purchase_ts": recent},
        {"loyalty": "L3", "tier": "silver", "home_store": "s1", "baskets": 40,
         "total_spend": 5000.0, "last_purchase_ts": recent},
        {"loyalty": "L4", "tier": "gold", "home_store": "s1", "baskets": 2,
         "total_spend": 100.0, "last_purchase_ts": None},
    ], hub.settings.salt)
    with hub.admin() as admin, hub.store("s1") as s1, hub.store("s3") as s3:
        r = admin.put("/v1/segments/gold-active", json={"name": "Gold, active", "rule": GOLD})
        assert r.status_code == 200 and r.json()["changed"] is True
        members = admin.get("/v1/segments/gold-active/members").json()
        assert members["count"] == 2
        assert set(members["subjects"]) == {subjects["L1"], subjects["L2"]}
        in_s1 = admin.get("/v1/segments/gold-active/members", params={"store": "s1"}).json()
        assert in_s1["subjects"] == [subjects["L1"]]
        preview = admin.post("/v1/segments/preview", params={"limit": 0}, json={"rule": {
            "not": GOLD}}).json()
        assert preview["count"] == 2 and preview["subjects"] == [] and preview["truncated"]

        admin.put("/v1/offers/o-gold", json=offer(segment="gold-active"))
        items, c1 = read_feed(s1, "s1", "offers")
        assert items[0]["segment"] == "gold-active"
        assert items[0]["subjects"] == [subjects["L1"]]
        assert read_feed(s3, "s3", "offers")[0] == []  # no member of the segment there
        assert admin.get("/v1/offers/o-gold").json()["sent_to"] == ["s1", "s2"]
        assert admin.get("/v1/segments/gold-active").json()["offers"] == ["o-gold"]

        # L4 buys a lot: after the refresh interval, s1's poll re-targets the offer
        with db.write() as conn:
            conn.execute("UPDATE aggregates SET total_spend = 800, last_purchase_ts = ? "
                         "WHERE subject = ?", (T0, subjects["L4"]))
        assert read_feed(s1, "s1", "offers", c1)[0] == []  # not yet: refreshed < 60 s ago
        clock.now = T0 + 61
        items, c1 = read_feed(s1, "s1", "offers", c1)
        assert items[0]["subjects"] == sorted([subjects["L1"], subjects["L4"]])
        # the segment narrows: s2 loses its only member → delete there
        narrower = {"all": [*GOLD["all"], {"field": "home_store", "op": "==", "value": "s1"}]}
        assert admin.put("/v1/segments/gold-active", json={"rule": narrower}).json()[
            "feed_items"] == 1
        with hub.store("s2") as s2:
            assert ops(read_feed(s2, "s2", "offers")[0]) == [("delete", "o-gold")]
        # an erased member leaves the subjects list at the store's very next poll
        items, c1 = read_feed(s1, "s1", "offers", c1)
        assert admin.delete(f"/v1/members/{subjects['L1']}").status_code == 200
        items, c1 = read_feed(s1, "s1", "offers", c1)
        assert [i["subjects"] for i in items] == [[subjects["L4"]]]
        # so does one who revokes personalisation; nobody eligible left in s1 → delete
        r = admin.put(f"/v1/members/{subjects['L4']}/consent",
                      json={"consent": {"personalize": False}})
        assert r.status_code == 200, r.text
        assert ops(read_feed(s1, "s1", "offers", c1)[0]) == [("delete", "o-gold")]
        r = admin.delete("/v1/segments/gold-active")
        assert r.status_code == 409 and r.json()["detail"]["offers"] == ["o-gold"]
        admin.delete("/v1/offers/o-gold")
        assert admin.delete("/v1/segments/gold-active").json()["deleted"] is True
        assert admin.get("/v1/segments/gold-active/members").status_code == 404
        assert admin.get("/v1/segments").json()["segments"] == []
