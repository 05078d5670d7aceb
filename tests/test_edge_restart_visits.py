"""Customers in the store survive an edge restart (kill -9 or SIGTERM): the same visits come
back with their staff cards, dismissals still hold, no second push reaches a phone, and a
visit silent for too long is closed in SQLite instead of coming back."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EdgeProcess, EmbeddedEdge, MqttProbe, Received, wait_until
from edge.rules import RulesConfig
from edge.store import EdgeStore
from edge.visit import CheckinEvent, GeofenceEvent, VisitConfig, VisitTracker
from edge.visit_restore import TIMED_OUT, encode_state
from hub.tokens import SCOPES
from tests.edge_env import EdgeEnv, make_env, new_id
from tests.test_edge_e2e import check_in, staff_for

# A push on every ranking (any hour, relevance, plenty of caps): so a push after the restart
# could only be held back by the restore itself, not by a cap the first push used up.
PUSHY = RulesConfig(quiet_hours=(0, 0), app_offer_min_relevance=0.0,
                    max_app_offers_per_visit=10, max_app_offers_per_day=50)
# A zone is kept 30 s without a beacon, longer than a restart takes.
VISITS = VisitConfig(zone_min_dwell_s=0.3, exit_grace_s=30.0)


def rows(db: Path) -> dict[str, tuple[Any, ...]]:
    """visit_id -> (ended_at, end_reason, zone, has saved state) as SQLite holds them."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        found = conn.execute(
            "SELECT visit_id, ended_at, end_reason, zone, resume IS NOT NULL FROM visits"
        )
        return {r[0]: r[1:] for r in found}


def add_silent_visit(env: EdgeEnv, subject: str, last_seen: float) -> tuple[str, float]:
    """An open visit as a checkpoint of the real tracker leaves it, last seen long ago."""
    tracker = VisitTracker(VISITS)
    tracker.apply(CheckinEvent(new_id(), subject, last_seen - 60, frozenset(SCOPES)))
    tracker.apply(GeofenceEvent(new_id(), subject, last_seen, "dwell"))
    (state,) = tracker.states()
    visit = tracker.get(subject)
    assert visit is not None
    with EdgeStore(env.settings.db_path) as store:
        store.save_visit(visit.visit_id, subject, visit.started_at, None, None,
                         visit.confidence, True)
        assert store.checkpoint_visits([(visit, encode_state(state))]) == {visit.visit_id}
    return visit.visit_id, visit.last_seen


def dismiss(env: EdgeEnv, probe: MqttProbe, card: dict[str, Any], product_id: str) -> Received:
    """A staff tap on "dismiss"; the refreshed card it caused."""
    event_id = new_id()
    probe.publish(env.topics.feedback(), {
        "v": 1, "event_id": event_id, "ts": time.time(), "subject": card["subject"],
        "visit_id": card["visit_id"], "product_id": product_id, "action": "dismissed",
        "channel": "staff"})
    return probe.wait_for(lambda r: staff_for(card["subject"])(r)
                          and r.payload["trigger_event_id"] == event_id, 10)


def suggested(card: dict[str, Any]) -> list[str]:
    return [s["product_id"] for s in card["suggestions"]]


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_customers_in_the_store_come_back_after_a_restart(
    tmp_path: Path, tafeng_zip: Path, fresh_broker: PrivateBroker, how: str
) -> None:
    env = make_env(tmp_path, tafeng_zip, fresh_broker.port, n_products=120, n_members=6,
                   rules=PUSHY, visit=VISITS)
    first, second, silent = env.seed.subjects[:3]
    db = env.settings.db_path
    prefix = env.topics.prefix
    offers = lambda r: r.topic.startswith(f"{prefix}/app/")  # noqa: E731
    with MqttProbe(fresh_broker.host, fresh_broker.port,
                   [env.topics.staff_recommendations, f"{prefix}/app/+/offers"]) as probe:
        edge = EdgeProcess(env.settings, tmp_path).start()
        try:
            card1 = check_in(env, probe, first).payload
            card2 = check_in(env, probe, second).payload
            for subject in (first, second):  # each got a push
                probe.wait_for(lambda r, s=subject: r.topic == env.topics.app_offers(s), 10)
            dismissed = suggested(card1)[0]
            assert dismissed not in suggested(dismiss(env, probe, card1, dismissed).payload)
            for i in range(3):
                probe.publish(env.topics.beacon(second), {
                    "v": 1, "event_id": new_id(), "ts": time.time(), "subject": second,
                    "zone": "dairy", "beacon_id": f"b{i}", "rssi": -60}, qos=0)
            probe.wait_for(lambda r: staff_for(second)(r) and r.payload["trigger"] == "zone_dwell",
                           10)
            ids = {card1["visit_id"], card2["visit_id"]}
            if how == "kill -9":  # nothing runs on the way down: what the ticks saved counts
                wait_until(lambda: all(rows(db)[v][3] for v in ids)
                           and rows(db)[card2["visit_id"]][2] == "dairy", 10)
                edge.kill()
            else:
                assert edge.stop() in (0, -15)
            down = len(probe.received)
            old_id, old_seen = add_silent_visit(env, silent, time.time() - 2 * 3600)
            # the app retries its check-in meanwhile: the broker redelivers it after the start
            retry = env.checkin_payload(second)
            probe.publish(env.topics.checkin(second), retry)

            edge.start()
            # ready means restored: the tablet sees both customers at once, same visits
            cards = httpx.get(f"{edge.url}/v1/visits", headers=env.tablet).json()["visits"]
            by_visit = {c["visit_id"]: c for c in cards}
            assert set(by_visit) == ids
            assert by_visit[card1["visit_id"]]["trigger"] == "restore"
            assert dismissed not in suggested(by_visit[card1["visit_id"]])
            # the redelivered check-in found the restored visit (no second visit), zone kept
            retried = probe.wait_for(lambda r: staff_for(second)(r)
                                     and r.payload["trigger_event_id"] == retry["event_id"], 10)
            assert (retried.payload["visit_id"], retried.payload["zone"]) == (
                card2["visit_id"], "dairy")
            # all the edge published before it: both restored cards, and no push
            since = probe.received[down:probe.received.index(retried)]
            assert {r.payload["visit_id"] for r in since if r.payload.get("trigger") == "restore"
                    } == ids
            assert not [r for r in since if offers(r)]
            # the visit goes on: another tap refreshes the SAME visit, both dismissals hold
            again = suggested(by_visit[card1["visit_id"]])[0]
            refreshed = dismiss(env, probe, by_visit[card1["visit_id"]], again).payload
            assert refreshed["visit_id"] == card1["visit_id"]
            assert dismissed not in suggested(refreshed) and again not in suggested(refreshed)
            # too long silent: closed when last seen, not restored
            assert rows(db)[old_id][:2] == (old_seen, TIMED_OUT)
            assert all(rows(db)[v][0] is None for v in ids)
        finally:
            edge.stop()


def test_a_graceful_stop_saves_what_no_tick_has_saved_yet(
    tmp_path: Path, tafeng_zip: Path, broker: PrivateBroker
) -> None:
    """The first checkpoint tick is a minute away: only the stop itself can have saved it."""
    env = make_env(tmp_path, tafeng_zip, broker.port, n_products=60, n_members=3,
                   tick_interval_s=60.0)
    with EmbeddedEdge(env.settings) as edge:
        answer = httpx.post(f"{edge.url}/v1/checkin", json=env.checkin_payload(
            env.seed.subjects[0]), timeout=10).json()
        assert not rows(env.settings.db_path)[answer["visit_id"]][3]  # no state saved yet
    assert rows(env.settings.db_path)[answer["visit_id"]][3]
    with EmbeddedEdge(env.settings) as edge:
        cards = httpx.get(f"{edge.url}/v1/visits", headers=env.tablet).json()["visits"]
        assert [c["visit_id"] for c in cards] == [answer["visit_id"]]
