"""Fault: the hub goes away (process stopped) in the middle of a stream of till baskets.

What the store does meanwhile: everything it serves keeps working from its own SQLite (a
check-in still gets its staff card), readyz stays 200 (offline-first), /v1/status shows
``hub_connected: false`` and the outbox growing. When the hub is back (same port, same DB)
the outbox drains by itself and the hub holds every basket exactly once.
(test_sync_e2e.test_pos_events_reach_the_hub_exactly_once_across_an_outage proves the same
for HTTP baskets and a re-sent batch; this matrix entry streams QoS 1 baskets through the
broker while the hub stops and measures the drain.)
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe, wait_until
from edge.topics import Topics
from hub.devtools import HubProcess, hub_settings
from tests.fault_env import Publisher, basket, exactly_once, hub_exactly_once, new_id, record
from tests.sync_env import (
    CHAIN,
    checkin_token,
    edge_settings,
    import_members,
    list_products,
    shelf,
    subject_of,
    wait_status,
)

BASKETS = 200
STOP_AT = 60
PACE_S = 0.005
ANA = {"loyalty_number": "L-3001", "first_name": "Ana", "tier": "gold", "home_store": "s001"}


def test_hub_down_mid_stream_the_store_serves_and_the_outbox_drains_exactly_once(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    ana = subject_of(ANA["loyalty_number"])
    topics = Topics(CHAIN, "s001")
    settings = hub_settings(tmp_path, chain=CHAIN)
    hub = HubProcess(tmp_path, stores=("s001",), settings=settings).start()
    try:
        import_members(hub.admin(), [ANA])
        list_products(hub.admin(), "s001", shelf(4, stock=10_000, price=lambda i: 1.0 + i))
        cfg = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], broker.port,
                            stale_after_s=1.0)
        with EmbeddedEdge(cfg) as edge, MqttProbe(
            broker.host, broker.port, [topics.staff_recommendations]
        ) as tablet:
            store = edge.runtime.store
            wait_until(lambda: len(store.catalog()) == 4 and store.get_profile(ana)
                       and edge.runtime.service.verifier.key_ids, 15)
            token = checkin_token(hub.app_backend(), ana, "s001")  # before the hub goes
            pub = Publisher(broker.host, broker.port)
            sent: list[str] = []
            stopped: dict[str, float] = {}

            def stream() -> None:
                for i in range(BASKETS):
                    event_id = new_id()
                    # anonymous: a member's lines on the edge are replaced by the hub's
                    # history (last 50 baskets) once synced, so count lines on anonymous ones
                    pub.publish(topics.pos, basket(event_id, None, f"p{1 + i % 4}"))
                    sent.append(event_id)
                    if i == STOP_AT:
                        hub.stop()
                        stopped["at"] = time.monotonic()
                    time.sleep(PACE_S)

            streamer = threading.Thread(target=stream, name="fault-stream")
            streamer.start()
            try:
                wait_until(lambda: "at" in stopped, 30)
                # the store keeps serving: an app check-in gets its staff card
                checkin_id = uuid.uuid4().hex
                pub.publish(topics.checkin(ana), {"v": 1, "event_id": checkin_id,
                                                  "ts": time.time(), "token": token})
                card = tablet.wait_for(lambda r: r.payload.get("subject") == ana
                                       and r.payload.get("trigger") == "checkin", 10)
                assert card.payload["suggestions"]
                streamer.join(60)
                pub.wait_answered()
                down = wait_status(edge.url, lambda s: not s["hub_connected"]
                                   and s["outbox_pending"] >= BASKETS - STOP_AT - 1)
                assert httpx.get(f"{edge.url}/readyz").status_code == 200
                outbox_peak = down["outbox_pending"]

                hub.start()  # same port, same DB
                back = time.monotonic()
                wait_status(edge.url, lambda s: s["outbox_pending"] == 0 and s["hub_connected"],
                            timeout=30)
                drained_s = time.monotonic() - back
            finally:
                pub.close()
            assert set(pub.accepted) == set(sent) | {checkin_id}
            counts = exactly_once(cfg.db_path, sent, checkins=[checkin_id])
            at_hub = hub_exactly_once(settings[0].db_path, sent, "pos_basket")
            outage_s = back - stopped["at"]
    finally:
        hub.stop()
    record("hub_down", induced="storeside-hub serve SIGTERM mid-stream, started again",
           outage_s=round(outage_s, 2), outbox_peak=outbox_peak,
           drain_after_hub_back_s=round(drained_s, 2), sent=len(pub.sent),
           accepted=len(pub.accepted), handled=counts["pos"] + counts["checkins"],
           at_hub=at_hub, lost=0, duplicates=0, checkin_card_during_outage=True)
