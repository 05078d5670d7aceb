"""The hub side of the sync contract on a real uvicorn + SQLite hub: events, feeds,
relevance, tombstones, erasures with per-store acks, heartbeats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.devtools import EmbeddedHub
from hub.relevance import DAY, HOUR
from tests.hub_env import Clock, basket, csv_text, member_row, subject

STORES = ("s1", "s2", "s3")


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(tmp_path, stores=STORES, clock=Clock()) as running:
        yield running


def push(hub: EmbeddedHub, store: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = hub.store(store).post(f"/v1/stores/{store}/events", json={"events": events})
    assert r.status_code == 200, r.text
    return r.json()


def drain(hub: EmbeddedHub, store: str, cursor: str = "0", limit: int | None = None,
          feed: str = "feed/profiles") -> tuple[list[dict[str, Any]], str, int]:
    """Every item after ``cursor``, following ``more``; returns (items, cursor, pages)."""
    items: list[dict[str, Any]] = []
    pages = 0
    client = hub.store(store)
    while True:
        params = {"cursor": cursor} | ({"limit": limit} if limit else {})
        page = client.get(f"/v1/stores/{store}/{feed}", params=params).json()
        pages += 1
        items += page["items"]
        cursor = page["cursor"]
        if not page["more"]:
            return items, cursor, pages


def ops(items: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(i["op"], i["subject"], i.get("reason")) for i in items]


def test_event_ingestion_is_idempotent_and_per_store(hub: EmbeddedHub) -> None:
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1)))
    ts = hub.context.clock.now
    events = [basket(subject(1), ts, lines=3), basket(None, ts),
              {"event_id": "f1", "kind": "feedback", "subject": subject(1), "created_at": ts,
               "payload": {"action": "accepted", "product_id": "p1"}}]
    first = push(hub, "s2", events)
    assert first == {"accepted": [e["event_id"] for e in events], "duplicates": [],
                     "refused": []}
    second = push(hub, "s2", [*events, events[0]])
    assert second["accepted"] == [] and len(second["duplicates"]) == 4
    export = hub.admin().get(f"/v1/members/{subject(1)}/export").json()
    assert export["aggregates"]["baskets"] == 1  # not doubled by the re-send
    assert export["aggregates"]["total_spend"] == pytest.approx((1 + 2 + 3) * 2.0)
    assert len(export["purchases"]) == 3
    # a store key may only push to its own store; no key is 401
    r = hub.store("s1").post("/v1/stores/s2/events", json={"events": events})
    assert (r.status_code, r.json()["detail"]["reason"]) == (403, "forbidden")
    assert httpx.post(f"{hub.url}/v1/stores/s2/events", json={"events": []}).status_code == 401
    assert hub.admin().post("/v1/stores/s2/events", json={"events": []}).status_code == 403


def test_bad_events_are_refused_one_by_one_and_big_batches_rejected(hub: EmbeddedHub) -> None:
    ts = hub.context.clock.now
    good = basket(None, ts)
    bad = [
        {"event_id": "no kind", "payload": {}, "created_at": ts},
        {"event_id": "x1", "kind": "pos_basket", "subject": None, "created_at": ts,
         "payload": {"basket_id": "b", "lines": []}},
        {"event_id": "x2", "kind": "feedback", "subject": "a/b", "created_at": ts, "payload": {}},
        {"event_id": "x3", "kind": "feedback", "subject": None, "created_at": "soon",
         "payload": {}},
        "not an object",
    ]
    result = push(hub, "s1", [good, *bad])
    assert result["accepted"] == [good["event_id"]]
    assert [r["reason"] for r in result["refused"]] == ["bad_event"] * 5
    r = hub.store("s1").post("/v1/stores/s1/events",
                             json={"events": [basket(None, ts) for _ in range(1001)]})
    assert (r.status_code, r.json()["detail"]["reason"]) == (413, "batch_too_large")
    r = hub.store("s1").post("/v1/stores/s1/events", json={"evts": []})
    assert (r.status_code, r.json()["detail"]["reason"]) == (422, "bad_batch")
    r = hub.store("s1").post("/v1/stores/s1/events", content=b"{not json")
    assert (r.status_code, r.json()["detail"]["reason"]) == (400, "bad_json")


def test_profile_feed_relevance_and_cross_store_freshness(hub: EmbeddedHub) -> None:
    clock = hub.context.clock
    hub.admin().post("/v1/members/import", content=csv_text(
        member_row(1, home="s1"), member_row(2, home="s1", consent="no,yes,yes"),
        member_row(3, home="s2")))
    items, c1, _ = drain(hub, "s1")
    assert ops(items) == [("upsert", subject(1), None),
                          ("delete", subject(2), "consent_revoked")]
    upsert = items[0]
    assert upsert["profile"] == {
        "first_name": "Ana", "tier": "gold", "birthday": "1990-01-02",
        "preferences": {"sizes": {"dairy": "large"}, "brands": ["Sunvale", "Crispo"]},
        "consent": {"personalize": True, "staff_display": True, "app_offers": True},
        "home_store": "s1"}
    assert upsert["aggregates"] == {"baskets": 0, "total_spend": 0.0, "last_purchase_ts": None}
    _, c3, _ = drain(hub, "s3")
    assert drain(hub, "s3")[0] == []  # not relevant to s3 at all

    # member 1 buys at s3: s3 now carries the profile; s1 sees the new history too
    push(hub, "s3", [basket(subject(1), clock.now, lines=2, basket_id="b1")])
    items, c3, _ = drain(hub, "s3", c3)
    assert ops(items) == [("upsert", subject(1), None)]
    assert items[0]["aggregates"]["baskets"] == 1
    assert {(h["basket_id"], h["product_id"]) for h in items[0]["history"]} == {
        ("b1", "p0"), ("b1", "p1")}
    items, c1, _ = drain(hub, "s1", c1)
    assert ops(items) == [("upsert", subject(1), None)]
    assert drain(hub, "s1", c1)[0] == []  # nothing new: the cursor is exact

    # geofence approach at s2 brings member 1 there for 24 h
    r = hub.store("s2").post("/v1/stores/s2/announce", json={"subject": subject(1)})
    assert (r.status_code, r.json()) == (202, {"status": "accepted"})
    items, c2, _ = drain(hub, "s2")
    assert ops(items) == [("upsert", subject(3), None), ("upsert", subject(1), None)]
    clock.advance(25 * HOUR)
    items, c2, _ = drain(hub, "s2", c2)
    assert ops(items) == [("delete", subject(1), "not_relevant")]
    # the visit at s3 keeps it there for 90 days, the home store forever
    clock.advance(90 * DAY)
    assert ops(drain(hub, "s3", c3)[0]) == [("delete", subject(1), "not_relevant")]
    assert drain(hub, "s1", c1)[0] == []
    r = hub.store("s2").post("/v1/stores/s2/announce", json={"subject": subject(99)})
    assert r.json() == {"status": "unknown_member"}
    assert hub.store("s2").post("/v1/stores/s2/announce",
                                json={"subject": "bob"}).status_code == 422


def test_consent_revocation_and_regrant_reach_every_store(hub: EmbeddedHub) -> None:
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1, home="s1")))
    push(hub, "s2", [basket(subject(1), hub.context.clock.now)])
    _, c1, _ = drain(hub, "s1")
    _, c2, _ = drain(hub, "s2")
    hub.app_backend().put(f"/v1/members/{subject(1)}/consent",
                          json={"consent": {"personalize": False}})
    for store, cursor in (("s1", c1), ("s2", c2)):
        assert ops(drain(hub, store, cursor)[0]) == [("delete", subject(1), "consent_revoked")]
    hub.app_backend().put(f"/v1/members/{subject(1)}/consent",
                          json={"consent": {"personalize": True}})
    items = drain(hub, "s2", c2)[0]
    assert ops(items) == [("upsert", subject(1), None)] and items[0]["aggregates"]["baskets"] == 1


def test_feed_paging_cursor_and_bad_parameters(hub: EmbeddedHub) -> None:
    rows = [member_row(i, home="s1") for i in range(1, 26)]
    hub.admin().post("/v1/members/import", content=csv_text(*rows))
    items, cursor, pages = drain(hub, "s1", limit=10)
    assert pages == 3 and len(items) == 25
    seqs = [i["seq"] for i in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == 25
    assert int(cursor) >= seqs[-1]
    client = hub.store("s1")
    for params, reason in (({"cursor": "-1"}, "bad_cursor"), ({"cursor": "abc"}, "bad_cursor"),
                           ({"limit": 0}, "bad_limit"), ({"limit": 5001}, "bad_limit")):
        r = client.get("/v1/stores/s1/feed/profiles", params=params)
        assert (r.status_code, r.json()["detail"]["reason"]) == (422, reason)
    assert client.get("/v1/stores/s2/feed/profiles").status_code == 403


def test_erasure_feed_acks_tombstones_and_late_events(hub: EmbeddedHub) -> None:
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1), member_row(2)))
    ts = hub.context.clock.now
    queued = basket(subject(1), ts)
    _, c1, _ = drain(hub, "s1")
    erasure = hub.admin().delete(f"/v1/members/{subject(1)}").json()
    # every store gets the erasure, also one the member never visited
    for store in STORES:
        items, _, _ = drain(hub, store, feed="erasures")
        assert [(i["erasure_id"], i["subject"]) for i in items] == [
            (erasure["erasure_id"], subject(1))]
    assert ops(drain(hub, "s1", c1)[0]) == [("delete", subject(1), "erased")]
    status = hub.admin().get(f"/v1/erasures/{erasure['erasure_id']}").json()
    assert status["acknowledged"] == [] and status["pending"] == list(STORES)

    hub.context.clock.advance(5)
    ack = f"/v1/stores/s2/erasures/{erasure['erasure_id']}/ack"
    first = hub.store("s2").post(ack).json()
    hub.context.clock.advance(5)
    assert hub.store("s2").post(ack).json() == first  # idempotent: first time kept
    assert hub.store("s1").post(ack).status_code == 403
    assert hub.store("s2").post("/v1/stores/s2/erasures/er-nope/ack").status_code == 404
    status = hub.admin().get(f"/v1/erasures/{erasure['erasure_id']}").json()
    assert status["acknowledged"] == [{"store": "s2", "acked_at": first["acked_at"]}]
    assert status["pending"] == ["s1", "s3"] and status["complete"] is False
    assert hub.store("s2").get(f"/v1/erasures/{erasure['erasure_id']}").status_code == 403

    # a late event of the erased member (queued at a store before it learnt) is refused
    result = push(hub, "s3", [queued, basket(subject(2), ts)])
    assert result["refused"] == [{"event_id": queued["event_id"], "reason": "erased"}]
    assert len(result["accepted"]) == 1
    assert hub.store("s3").post("/v1/stores/s3/announce",
                                json={"subject": subject(1)}).json() == {"status": "erased"}


def test_heartbeat_is_stored_for_the_hub_page(hub: EmbeddedHub) -> None:
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1), member_row(2)))
    _, cursor, _ = drain(hub, "s1")
    beat = {"model_version": "m-7", "state": "online", "outbox_pending": 3,
            "feeds": {"profiles": str(int(cursor) - 1), "catalog": "0"}, "staleness_s": 1.5,
            "active_visits": 2, "future_field": True}
    r = hub.store("s1").post("/v1/stores/s1/heartbeat", json=beat)
    assert r.status_code == 200 and r.json()["lag_changes"] == 1
    statuses = {s["store"]: s for s in hub.context.db.store_statuses()}
    assert statuses["s1"]["model_version"] == "m-7" and statuses["s1"]["outbox_pending"] == 3
    assert statuses["s1"]["last_sync_at"] == hub.context.clock.now
    assert statuses["s1"]["lag_changes"] == 1 and statuses["s1"]["state"] == "online"
    assert statuses["s2"]["last_sync_at"] is None  # never sent one


def test_a_checkin_brings_the_member_to_that_store_only(hub: EmbeddedHub) -> None:
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1, home="s1")))
    _, c1, _ = drain(hub, "s1")
    _, c3, _ = drain(hub, "s3")
    checkin = {"event_id": "c1", "kind": "checkin", "subject": subject(1),
               "created_at": hub.context.clock.now, "payload": {"visit_id": "v1"}}
    assert push(hub, "s3", [checkin])["accepted"] == ["c1"]
    assert ops(drain(hub, "s3", c3)[0]) == [("upsert", subject(1), None)]
    assert drain(hub, "s1", c1)[0] == []  # nothing about the member changed for s1


def test_basket_lines_get_their_category_from_the_hub_catalog(hub: EmbeddedHub) -> None:
    from hub.catalog_rows import Product
    from hub.catalog_store import CatalogStore

    CatalogStore(hub.context.db).upsert_products([Product("p0", "Milk", "dairy", 1.0, None)])
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1, home="s1")))
    push(hub, "s2", [basket(subject(1), hub.context.clock.now, lines=2)])
    history = drain(hub, "s1")[0][0]["history"]
    assert {(h["product_id"], h["category"]) for h in history} == {("p0", "dairy"),
                                                                   ("p1", None)}
