"""Fault: Mosquitto restarts (SIGTERM + start on the same port), with and without persistence.

What the store does meanwhile: the edge notices the lost connection (status and readyz say
so), keeps its worker and HTTP API running, reconnects by itself with backoff (same client
id, Clean Start 0: its session and subscriptions come back from the broker's persistence or
are re-made), publishes its retained ``online`` status again and handles what the broker
hands over, each event once (idempotent by event id).

The precise guarantee, two cases:

* persistence on (``persistence true``; Mosquitto saves its sessions and queues at a clean
  shutdown): every event the broker accepted (success PUBACK) is handled exactly once, also
  those queued for the edge while it was away when the broker restarted.
* persistence off: what the old broker instance held and had not yet delivered (the queue of
  the edge's session) is LOST with it; everything the new instance accepts is handled
  once the edge has subscribed again (it publishes its ``online`` status right after). A
  publisher's own un-acked messages are not lost: its session (Clean Start 0) resends them
  after it reconnects. But what the new instance accepts BEFORE the edge re-subscribed has no
  subscriber and is dropped, and Mosquitto 2.0.11 still answers it with a success PUBACK
  (no reason 16), so the publisher cannot tell. Stores therefore run the broker with
  persistence (deploy/ config); then there is no such window.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe, wait_until
from edge.store import EdgeStore
from tests.edge_env import make_env
from tests.fault_env import (
    Publisher,
    basket,
    exactly_once,
    new_id,
    processed_ids,
    record,
    staff_feedback,
)

QUEUED = 40  # sent while the edge is away, before the broker restarts
STREAM = 300  # sent while the edge is connected; the broker restarts after RESTART_AT
RESTART_AT = 100
PACE_S = 0.003


def edge_status(edge: EmbeddedEdge) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{edge.url}/v1/status", timeout=5).json()
    return answer


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "in_memory"])
def test_broker_restart_loses_no_accepted_event(
    tmp_path: Path, tafeng_zip: Path, persistence: bool
) -> None:
    store_dir = tmp_path / "mosquitto"
    store_dir.mkdir()
    with PrivateBroker(persistence_dir=store_dir if persistence else None) as broker:
        env = make_env(tmp_path, tafeng_zip, broker.port, n_products=40, n_members=6)
        db = env.settings.db_path
        with EdgeStore(db) as store:
            products = [item.product_id for item in store.catalog()[:10]]
        subjects = env.seed.subjects
        pub = Publisher(broker.host, broker.port)
        pos: list[str] = []
        feedback: list[str] = []

        def send(i: int) -> str:
            event_id = new_id()
            if i % 3 == 2:
                pub.publish(env.topics.feedback(),
                            staff_feedback(event_id, subjects[i % 6], products[i % 10]))
                feedback.append(event_id)
            else:
                pub.publish(env.topics.pos, basket(event_id, subjects[i % 6], products[i % 10]))
                pos.append(event_id)
            return event_id

        try:
            # 1. Events queued for the edge's session while it is away, then the restart.
            with EmbeddedEdge(env.settings):
                pass  # its session and subscriptions now live in the broker
            queued = [send(i) for i in range(QUEUED)]
            pub.wait_answered()
            assert set(queued) <= set(pub.accepted)  # queued for the edge's session
            broker.restart()
            with EmbeddedEdge(env.settings) as edge:
                marker = send(QUEUED)  # sent after the restart: delivered after the queue
                wait_until(lambda: marker in processed_ids(db), 15)
                kept = set(queued) & processed_ids(db)
                assert kept == (set(queued) if persistence else set())

                # 2. The broker restarts in the middle of a stream, the edge connected. The
                # watcher stamps the edge's "online" status: the edge publishes it right
                # after (re)subscribing, so the broker has its subscription from then on.
                restarted: dict[str, float] = {}
                online: list[float] = []
                watcher = MqttProbe(broker.host, broker.port, [env.topics.status],
                                    on_receive=lambda r: online.append(time.monotonic())
                                    if r.payload.get("state") != "offline" else None).start()

                def stream() -> None:
                    for i in range(STREAM):
                        send(QUEUED + 1 + i)
                        if i == RESTART_AT:
                            restarted["began"] = time.monotonic()
                            broker.restart()
                            restarted["done"] = time.monotonic()
                        time.sleep(PACE_S)

                streamer = threading.Thread(target=stream, name="fault-stream")
                streamer.start()
                wait_until(lambda: "done" in restarted, 30)
                registry = edge.runtime.metrics.registry
                wait_until(lambda: (registry.get_sample_value(
                    "storeside_mqtt_disconnects_total") or 0) >= 1, 10)  # it noticed
                wait_until(lambda: edge_status(edge)["mqtt_connected"], 30, interval=0.02)
                reconnect_s = time.monotonic() - restarted["done"]
                assert httpx.get(f"{edge.url}/readyz", timeout=5).status_code == 200
                streamer.join(60)
                pub.wait_answered()
                online_at = wait_until(lambda: next(
                    (t for t in online if t > restarted["done"]), None), 10)
                subscribed = {e for e, at in pub.accepted.items() if at > online_at}
                must = set(pub.accepted) if persistence else subscribed
                wait_until(lambda: must <= processed_ids(db), 30, interval=0.05)
                handled = processed_ids(db)
                lost = set(pub.accepted) - handled
                assert handled <= set(pub.sent)
                if persistence:
                    assert not lost
                else:  # what the old instance held for the edge, and what the new one
                    # took before the edge had subscribed again (no subscriber: dropped)
                    assert set(queued) <= lost
                    assert not lost & subscribed
                watcher.stop()
                with MqttProbe(broker.host, broker.port, [env.topics.status]) as fresh:
                    retained = fresh.wait_for(lambda r: r.topic == env.topics.status, 10)
                    assert retained.payload["state"] in ("online", "degraded")
                status = edge_status(edge)
        finally:
            pub.close()
    counts = exactly_once(db, set(pos) & handled, set(feedback) & handled)
    assert status["worker_alive"]
    record("broker_restart" + ("" if persistence else "_no_persistence"),
           induced="mosquitto SIGTERM + start, same port, persistence "
           + ("on" if persistence else "off"),
           reconnect_s=round(reconnect_s, 2), sent=len(pub.sent), accepted=len(pub.accepted),
           refused_no_subscriber=len(pub.refused), handled=counts["pos"] + counts["feedback"],
           queued_while_away=QUEUED, queued_kept=len(kept),
           lost=len(lost), lost_from_stream=len(lost - set(queued)),
           lost_after_resubscribe=len(lost & subscribed), duplicates=0)
