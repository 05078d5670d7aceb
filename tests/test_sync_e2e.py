"""Hub ⇄ edge sync end to end: a real hub (in-process uvicorn or a `storeside-hub serve`
process), a real edge with its broker, real SQLite files on both sides.

What the store must be able to rely on: the hub's changes reach it, its own events reach the
hub exactly once whatever happens to the link, an erasure leaves nothing behind, and nothing
it serves waits for the hub.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe
from edge.probe import wait_until
from edge.topics import Topics
from hub.devtools import EmbeddedHub, HubProcess, hub_settings
from tests.sync_env import (
    CHAIN,
    ERASED_TABLES,
    checkin_token,
    db_rows,
    edge_settings,
    import_members,
    list_products,
    pos_basket,
    shelf,
    subject_of,
    wait_status,
)

PRODUCTS = shelf(6, stock=20, price=lambda i: 1.0 + i)
ANA = {"loyalty_number": "L-1001", "first_name": "Ana", "tier": "gold", "home_store": "s001"}
BEN = {"loyalty_number": "L-1002", "first_name": "Ben", "tier": "silver", "home_store": "s002"}


def test_hub_changes_reach_the_edge(tmp_path: Path, broker: PrivateBroker) -> None:
    ana, ben = subject_of(ANA["loyalty_number"]), subject_of(BEN["loyalty_number"])
    settings = hub_settings(tmp_path, chain=CHAIN)
    with EmbeddedHub(tmp_path, stores=("s001", "s002"), settings=settings) as hub:
        import_members(hub.admin(), [ANA, BEN])
        list_products(hub.admin(), "s001", PRODUCTS)
        edge_cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port)
        with EmbeddedEdge(edge_cfg) as edge:
            store = edge.runtime.store
            # profiles of this store's members, its assortment and the hub's check-in keys
            wait_until(lambda: store.get_profile(ana) is not None, 15)
            wait_until(lambda: len(store.catalog()) == len(PRODUCTS), 10)
            wait_until(lambda: edge.runtime.service.verifier.key_ids, 10)
            assert store.get_profile(ben) is None  # not relevant to s001
            now = time.time()
            hub.admin().put("/v1/offers/o-tea", json={
                "category": "tea", "discount_pct": 10, "valid_from": now - 60,
                "valid_to": now + 3600, "stores": ["s001"]}).raise_for_status()
            offers = wait_until(lambda: store.active_offers(time.time()), 10)
            assert [(o.offer_id, o.category, o.discount_pct) for o in offers] == [
                ("o-tea", "tea", 10.0)]

            import_members(hub.admin(), [{**ANA, "first_name": "Anabel", "tier": "platinum"}])
            profile = wait_until(lambda: (p := store.get_profile(ana)) and
                                 p.first_name == "Anabel" and p, 10)
            assert profile.tier == "platinum" and profile.consents("staff_display")

            # a token the hub minted is accepted offline with the keys it published
            token = checkin_token(hub.app_backend(), ana, "s001")
            answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
                "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(), "token": token})
            assert answer.status_code == 200, answer.text
            assert answer.json()["visit_id"] is not None

            # a geofence approach of a member unknown here brings their profile
            with MqttProbe(broker.host, broker.port) as app:
                app.publish(Topics(CHAIN, "s001").geofence(ben), {
                    "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(),
                    "subject": ben, "transition": "enter"})
            wait_until(lambda: store.get_profile(ben) is not None, 10)

            # revoking personalize at the hub removes the profile from the store
            hub.app_backend().put(f"/v1/members/{ana}/consent",
                                  json={"consent": {"personalize": False}}).raise_for_status()
            wait_until(lambda: store.get_profile(ana) is None, 10)
            assert store.get_aggregates(ana) is None

            status = httpx.get(f"{edge.url}/v1/status").json()
            assert status["hub_connected"] is True and status["hub_sync"] is True
            assert set(status["staleness_s"]) == {"erasures", "profiles", "catalog", "offers"}
            assert all(v is not None and v < 5 for v in status["staleness_s"].values())
            metrics = httpx.get(f"{edge.url}/metrics").text
            assert 'storeside_sync_staleness_seconds{feed="profiles"}' in metrics
            # the hub sees the store's heartbeat (what the hub page shows)
            beat = wait_until(lambda: db_rows(
                settings[0].db_path, "SELECT state, outbox_pending, feeds FROM store_status "
                "WHERE store_id = 's001'"), 10)
            assert beat[0][0] in ("online", "degraded") and '"profiles"' in str(beat[0][2])


def test_pos_events_reach_the_hub_exactly_once_across_an_outage(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    ana = subject_of(ANA["loyalty_number"])
    settings = hub_settings(tmp_path, chain=CHAIN)
    hub_db = settings[0].db_path
    hub = HubProcess(tmp_path, stores=("s001",), settings=settings).start()
    try:
        import_members(hub.admin(), [ANA])
        list_products(hub.admin(), "s001", PRODUCTS[:2])
        edge_cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port,
                                 stale_after_s=1.0)
        with EmbeddedEdge(edge_cfg) as edge:
            store = edge.runtime.store
            wait_until(lambda: len(store.catalog()) == 2 and store.get_profile(ana), 15)
            token = checkin_token(hub.app_backend(), ana, "s001")  # before the hub goes

            sent = [pos_basket(ana, [("p1", 1, 2.0)]) for _ in range(3)]
            for basket in sent:
                assert httpx.post(f"{edge.url}/v1/pos", json=basket).status_code == 202
            wait_status(edge.url, lambda s: s["outbox_pending"] == 0)
            assert len(db_rows(hub_db, "SELECT 1 FROM events WHERE kind = 'pos_basket'")) == 3

            hub.stop()
            offline = [pos_basket(ana if i % 2 else None, [("p2", 2, 3.0)]) for i in range(20)]
            for basket in offline:
                assert httpx.post(f"{edge.url}/v1/pos", json=basket).status_code == 202
            # the store keeps serving: a check-in ranks from the local cache
            answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
                "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(), "token": token})
            assert answer.status_code == 200 and answer.json()["visit_id"]
            # stale once a feed is older than stale_after_s (each feed ages on its own clock
            # read: wait for the profiles feed itself, not just for the first stale one)
            status = wait_status(edge.url, lambda s: not s["hub_connected"] and s["sync_stale"]
                                 and s["staleness_s"]["profiles"] > 1.0)
            assert status["outbox_pending"] >= 20
            assert httpx.get(f"{edge.url}/readyz").status_code == 200  # offline-first
            assert "storeside_sync_errors_total" in httpx.get(f"{edge.url}/metrics").text

            hub.start()  # same port, same DB
            wait_status(edge.url, lambda s: s["outbox_pending"] == 0 and s["hub_connected"]
                        and not s["sync_stale"], timeout=20)
            pos_ids = [r[0] for r in db_rows(
                hub_db, "SELECT event_id FROM events WHERE kind = 'pos_basket'")]
            assert sorted(pos_ids) == sorted(b["event_id"] for b in sent + offline)
            baskets_of_ana = 3 + sum(1 for b in offline if b["subject"] == ana)
            assert db_rows(hub_db, "SELECT baskets FROM aggregates WHERE subject = ?",
                           ana) == [(baskets_of_ana,)]

            # a batch sent again (its answer lost) is answered as duplicates: no effect
            for basket in sent + offline[:5]:
                store.enqueue_outbox(basket["event_id"], "pos_basket", basket,
                                     subject=basket["subject"])
            wait_status(edge.url, lambda s: s["outbox_pending"] == 0)
            assert len(db_rows(hub_db, "SELECT 1 FROM events WHERE kind = 'pos_basket'")) == 23
            assert db_rows(hub_db, "SELECT baskets FROM aggregates WHERE subject = ?",
                           ana) == [(baskets_of_ana,)]
            metrics = httpx.get(f"{edge.url}/metrics").text
            assert 'storeside_outbox_pushed_total{result="duplicate"} 8.0' in metrics
            # the member's own baskets are part of the profile the hub sends back
            aggregates = wait_until(lambda: (a := store.get_aggregates(ana)) and
                                    a.baskets == baskets_of_ana and a, 10)
            assert aggregates.baskets == baskets_of_ana
    finally:
        hub.stop()


def test_erasure_reaches_the_edge_and_the_hub_sees_the_ack(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    ana = subject_of(ANA["loyalty_number"])
    settings = hub_settings(tmp_path, chain=CHAIN)
    with EmbeddedHub(tmp_path, stores=("s001", "s002"), settings=settings) as hub:
        import_members(hub.admin(), [ANA])
        list_products(hub.admin(), "s001", PRODUCTS)
        edge_cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port,
                                 push_interval_s=30.0)  # keep the member's events queued
        with EmbeddedEdge(edge_cfg) as edge:
            store = edge.runtime.store
            wait_until(lambda: store.get_profile(ana) and len(store.catalog()) == 6, 15)
            wait_until(lambda: edge.runtime.service.verifier.key_ids, 10)
            token = checkin_token(hub.app_backend(), ana, "s001")
            answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
                "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(), "token": token})
            assert answer.status_code == 200
            assert httpx.post(f"{edge.url}/v1/pos",
                              json=pos_basket(ana, [("p3", 1, 4.0)])).status_code == 202
            assert any(card["subject"] == ana for card in edge.app.state.live.snapshot())

            erasure = hub.admin().delete(f"/v1/members/{ana}")
            erasure.raise_for_status()
            erasure_id = erasure.json()["erasure_id"]

            def acked() -> bool:
                status = hub.admin().get(f"/v1/erasures/{erasure_id}").json()
                return "s001" in {a["store"] for a in status["acknowledged"]}

            wait_until(acked, 15)
            db = edge_cfg.db_path
            for table in ERASED_TABLES:
                rows = db_rows(db, f"SELECT COUNT(*) FROM {table} WHERE subject = ?", ana)
                assert rows == [(0,)], table
            assert not any(card["subject"] == ana for card in edge.app.state.live.snapshot())
            assert edge.runtime.service.tracker.get(ana) is None
            receipts = db_rows(db, "SELECT erasure_id, acked_at IS NOT NULL "
                               "FROM erasure_receipts")
            assert receipts == [(erasure_id, 1)]
            pending = hub.admin().get(f"/v1/erasures/{erasure_id}").json()["pending"]
            assert pending == ["s002"]  # the other store has not run an edge here


def test_an_edge_restarted_while_the_hub_is_away_still_verifies_hub_tokens(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    ana = subject_of(ANA["loyalty_number"])
    with EmbeddedHub(tmp_path, stores=("s001",), settings=hub_settings(tmp_path, chain=CHAIN)
                     ) as hub:
        import_members(hub.admin(), [ANA])
        list_products(hub.admin(), "s001", PRODUCTS)
        edge_cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port)
        with EmbeddedEdge(edge_cfg) as edge:
            wait_until(lambda: edge.runtime.service.verifier.key_ids
                       and edge.runtime.store.get_profile(ana), 15)
            kids = edge.runtime.service.verifier.key_ids
        token = checkin_token(hub.app_backend(), ana, "s001")
    # the hub is gone; the edge starts from its own database
    with EmbeddedEdge(edge_cfg) as edge:
        assert edge.runtime.service.verifier.key_ids == kids
        answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
            "v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(), "token": token})
        assert answer.status_code == 200 and answer.json()["card"]["display_name"] == "Ana"
        status = wait_status(edge.url, lambda s: s["hub_sync"] and not s["hub_connected"])
        assert status["staleness_s"]["profiles"] is not None  # known from the last run


def test_batches_the_hub_cannot_take_are_split_and_bad_events_dropped(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    ana = subject_of(ANA["loyalty_number"])
    settings = hub_settings(tmp_path, chain=CHAIN, sync={"max_events_per_batch": 16})
    with EmbeddedHub(tmp_path, stores=("s001",), settings=settings) as hub:
        import_members(hub.admin(), [ANA])
        edge_cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port,
                                 batch_size=100, push_interval_s=30.0)
        with EmbeddedEdge(edge_cfg) as edge:
            store = edge.runtime.store
            baskets = [pos_basket(ana, [("p1", 1, 2.0)]) for _ in range(60)]
            for basket in baskets:  # queued directly: the push interval is long
                store.enqueue_outbox(basket["event_id"], "pos_basket", basket, subject=ana)
            store.enqueue_outbox("broken-1", "pos_basket", {"basket_id": "b-x", "lines": []},
                                 subject=ana)
            edge.runtime.sync.pusher.resume()  # push now
            wait_status(edge.url, lambda s: s["outbox_pending"] == 0)
            stored = db_rows(settings[0].db_path,
                             "SELECT event_id FROM events WHERE kind = 'pos_basket'")
            assert sorted(r[0] for r in stored) == sorted(b["event_id"] for b in baskets)
            metrics = httpx.get(f"{edge.url}/metrics").text
            assert 'storeside_outbox_pushed_total{result="refused"} 1.0' in metrics
            assert 'storeside_sync_errors_total{error="http_413",job="outbox"}' not in metrics
