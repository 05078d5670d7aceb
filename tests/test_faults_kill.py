"""Fault: ``kill -9`` of the edge process while it writes (several times, at seeded points).

The guarantee under test: every event the BROKER accepted (PUBACK to its publisher: the
broker has it, queued for the edge's persistent session) is eventually handled by the edge
exactly once, across any number of SIGKILLs. The edge PUBACKs a delivery to the broker only
after the commit that recorded it, so a kill before that commit means a redelivery (handled
then), a kill after it means a redelivery that finds the event id in ``processed_events``
(changes nothing). The hub then gets each outbox event exactly once.
(tests/test_edge_restart.py covers one kill of a POS-only stream; this is the matrix entry:
mixed traffic, repeated kills, the hub end, SQLite integrity.)
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from edge.broker import PrivateBroker
from edge.devtools import EdgeProcess, MqttProbe, Received, wait_until
from edge.settings import HubLinkSettings
from edge.store import EdgeStore
from hub.devtools import EmbeddedHub
from tests.edge_env import STORE, make_env
from tests.fault_env import (
    Publisher,
    basket,
    edge_rows,
    exactly_once,
    hub_exactly_once,
    integrity_ok,
    new_id,
    processed_ids,
    record,
    staff_feedback,
)
from tests.sync_env import QUICK_LINK

SEED = 6
EVENTS = 600
KILLS = 3
PACE_S = 0.003  # a busy store's worth of events per second, not a synchronisation


def handled_count(db: Path) -> int:
    return int(edge_rows(db, "SELECT COUNT(*) FROM processed_events")[0][0])


def status_after(watcher: MqttProbe, seen: int, states: tuple[str, ...]) -> Received:
    """The first retained-status message after the first ``seen`` ones in ``states``."""
    def found() -> Received | None:
        every = watcher.matching(lambda r: True)
        return next((r for r in every[seen:] if r.payload.get("state") in states), None)

    received: Received = wait_until(found, 10)
    return received


def test_kill_9_during_writes_loses_and_doubles_no_accepted_event(
    tmp_path: Path, tafeng_zip: Path, fresh_broker: PrivateBroker
) -> None:
    rng = random.Random(SEED)
    (tmp_path / "hub").mkdir()
    with EmbeddedHub(tmp_path / "hub", stores=(STORE,)) as hub:
        link = HubLinkSettings(hub_url=hub.url, store_key=hub.store_keys[STORE], **QUICK_LINK)
        env = make_env(tmp_path, tafeng_zip, fresh_broker.port, n_products=40, n_members=8,
                       hub=link)
        db = env.settings.db_path
        with EdgeStore(db) as store:
            products = [item.product_id for item in store.catalog()[:10]]
        subjects = env.seed.subjects
        kinds = rng.choices(["pos", "feedback"], weights=[2, 1], k=EVENTS)
        # one check-in per member (a member checking in again within minutes is rate
        # limited, a dead letter by design), at seeded points of the stream
        checkin_of = dict(zip(rng.sample(range(EVENTS), len(subjects)), subjects, strict=True))
        for at in checkin_of:
            kinds[at] = "checkin"
        ids: dict[str, list[str]] = {"pos": [], "feedback": [], "checkin": []}
        # kill when the edge has handled this many events: mid-stream, at seeded points
        kill_at = sorted(rng.sample(range(EVENTS // 10, EVENTS * 8 // 10), KILLS))

        edge = EdgeProcess(env.settings, tmp_path).start()
        pub = Publisher(fresh_broker.host, fresh_broker.port)
        # the retained status: the last will says "offline" when the socket dies with the
        # process, the restarted edge says "online" again
        watcher = MqttProbe(fresh_broker.host, fresh_broker.port, [env.topics.status]).start()

        def stream() -> None:
            for i, kind in enumerate(kinds):
                event_id, subject = new_id(), subjects[i % len(subjects)]
                payload: dict[str, Any]
                if kind == "pos":
                    topic, payload = env.topics.pos, basket(event_id, subject, products[i % 10])
                elif kind == "feedback":
                    topic = env.topics.feedback()
                    payload = staff_feedback(event_id, subject, products[i % 10])
                else:
                    subject = checkin_of[i]
                    topic = env.topics.checkin(subject)
                    payload = {**env.checkin_payload(subject), "event_id": event_id}
                ids[kind].append(event_id)
                pub.publish(topic, payload)
                time.sleep(PACE_S)

        streamer = threading.Thread(target=stream, name="fault-stream")
        started = time.monotonic()
        streamer.start()
        restarts: list[float] = []
        try:
            for point in kill_at:
                wait_until(lambda p=point: handled_count(db) >= p, 60, interval=0.01)
                killed, seen = time.monotonic(), len(watcher.received)
                edge.kill()  # SIGKILL: no shutdown code runs
                will = status_after(watcher, seen, ("offline",))
                assert will.payload["reason"] == "connection_lost"
                edge.start()  # same DB, same client id: the broker redelivers
                restarts.append(time.monotonic() - killed)
                status_after(watcher, seen, ("online", "degraded"))
            streamer.join(60)
            pub.wait_answered()
            assert not pub.refused
            wait_until(lambda: set(pub.accepted) <= processed_ids(db), 60, interval=0.05)
            caught_up_s = time.monotonic() - started
            counts = exactly_once(db, ids["pos"], ids["feedback"], ids["checkin"])
            assert set(pub.accepted) == set(pub.sent)  # the broker took every one
            assert integrity_ok(db)
            # the outbox holds exactly what the hub has not confirmed yet, then drains
            wait_until(lambda: edge_rows(db, "SELECT COUNT(*) FROM outbox WHERE kind IN "
                                         "('pos_basket', 'feedback')") == [(0,)], 30)
        finally:
            pub.close()
            watcher.stop()
            edge.stop()
        hub_db = hub.settings.db_path
        at_hub = hub_exactly_once(hub_db, ids["pos"], "pos_basket")
        at_hub += hub_exactly_once(hub_db, ids["feedback"], "feedback")
    assert at_hub == len(ids["pos"]) + len(ids["feedback"])
    record("kill_9", induced=f"SIGKILL x{KILLS} at handled={kill_at} (seed {SEED})",
           restart_to_ready_s=[round(s, 2) for s in restarts],
           all_handled_after_s=round(caught_up_s, 2), sent=len(pub.sent),
           accepted=len(pub.accepted), handled=sum(counts[k] for k in ("pos", "feedback",
                                                                      "checkins")),
           at_hub=at_hub, lost=0, duplicates=0, integrity="ok")
