"""Fault: clocks that disagree — the app's, the till's, the edge's and the hub's.

Rules under test:
* the edge runs visits on its OWN clock: an app ``ts`` hours off changes nothing about the
  visit (it is kept as sent in what the edge forwards); a till's future ``ts`` is clamped to
  the edge's now, a past one is kept (the sale happened then); only a ``ts`` outside
  2001..2100 (milliseconds, zero) is refused, as ``invalid`` (counted);
* a check-in token is valid on the edge's clock within ``tokens.leeway_s`` (30 s) of its
  iat/nbf/exp: beyond, it is refused with ``not_yet_valid`` / ``expired`` (counted);
* edge vs hub: sync never compares clocks (cursors are sequence numbers), so feeds and the
  outbox converge whatever the skew, each event exactly once at the hub; but a skew above the
  leeway refuses hub tokens. That limit is visible: the heartbeat measures the skew
  (``hub_clock_skew_s`` in /v1/status, ``storeside_hub_clock_skew_seconds``, one warning),
  and the refusals are counted by reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, wait_until
from hub.devtools import EmbeddedHub, hub_settings
from tests.edge_env import EdgeEnv, edge_fixtures
from tests.fault_env import basket, edge_rows, exactly_once, new_id, record
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

env, edge = edge_fixtures(n_products=40, n_members=6)
HOURS_2 = 7200.0
LEEWAY = 30.0


def rejected(edge: EmbeddedEdge, reason: str) -> float:
    value = edge.runtime.metrics.registry.get_sample_value(
        "storeside_tokens_rejected_total", {"reason": reason})
    return value or 0.0


def test_app_and_till_clocks_hours_off_do_not_move_the_edges_clock(
    env: EdgeEnv, edge: EmbeddedEdge
) -> None:
    db = env.settings.db_path
    product = edge.runtime.store.catalog()[0].product_id
    member = env.seed.subjects[0]
    visits = []
    for offset in (+HOURS_2, -HOURS_2):  # the phone's clock, two hours ahead / behind
        subject = env.seed.subjects[1 if offset > 0 else 2]
        body = {**env.checkin_payload(subject), "ts": time.time() + offset}
        answer = httpx.post(f"{edge.url}/v1/checkin", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        visit = edge.runtime.store.visit(answer.json()["visit_id"])
        assert visit is not None and abs(visit.started_at - time.time()) < 5  # edge clock
        visits.append(body["event_id"])

    now = time.time()
    future = basket(new_id(), member, product, ts=now + HOURS_2)
    past = basket(new_id(), member, product, ts=now - HOURS_2)
    for sent in (future, past):
        assert httpx.post(f"{edge.url}/v1/pos", json=sent, timeout=10).status_code == 202
    stamps = dict(edge_rows(db, "SELECT basket_id, ts FROM purchases WHERE basket_id IN (?, ?)",
                            future["basket_id"], past["basket_id"]))
    assert now - 1 <= stamps[future["basket_id"]] <= time.time() + 1  # clamped to edge now
    assert stamps[past["basket_id"]] == past["ts"]  # kept: the sale happened then

    millis = basket(new_id(), member, product, ts=now * 1000)  # outside the accepted window
    answer = httpx.post(f"{edge.url}/v1/pos", json=millis, timeout=10)
    assert answer.status_code == 422 and answer.json()["detail"]["reason"] == "invalid"
    exactly_once(db, [future["event_id"], past["event_id"]], checkins=visits)
    assert millis["event_id"] not in {r[0] for r in edge_rows(
        db, "SELECT event_id FROM processed_events")}


@pytest.mark.parametrize(("issued", "outcome"), [
    (+(LEEWAY - 5), "accepted"),       # minted by a clock 25 s ahead of the edge's
    (-(300 + LEEWAY - 5), "accepted"),  # expired 25 s ago on the edge's clock
    (+(LEEWAY + 60), "not_yet_valid"),
    (-(300 + LEEWAY + 60), "expired"),
])
def test_token_times_are_judged_on_the_edge_clock_within_the_leeway(
    env: EdgeEnv, edge: EmbeddedEdge, issued: float, outcome: str
) -> None:
    body = env.checkin_payload(env.seed.subjects[3], ttl_s=300, now=time.time() + issued)
    answer = httpx.post(f"{edge.url}/v1/checkin", json=body, timeout=10)
    if outcome == "accepted":
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 401
        assert answer.json()["detail"]["reason"] == f"token_{outcome}"
        assert rejected(edge, outcome) == 1.0


# ---------------------------------------------------------------------- edge vs hub

SKEWS = (+10.0, -600.0, +600.0, -HOURS_2, +HOURS_2)


@pytest.fixture(scope="module")
def skew_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedHub]:
    """One hub (true clock) with a store and a member per skewed edge."""
    workdir = tmp_path_factory.mktemp("skew-hub")
    stores = tuple(f"s{i + 1:03d}" for i in range(len(SKEWS)))
    with EmbeddedHub(workdir, stores=stores, settings=hub_settings(workdir, chain=CHAIN)) as hub:
        import_members(hub.admin(), [
            {"loyalty_number": f"L-5{i:03d}", "first_name": f"M{i}", "tier": "silver",
             "home_store": store} for i, store in enumerate(stores)])
        for store in stores:
            list_products(hub.admin(), store, shelf(3, stock=100, price=lambda i: 2.0 * i))
        yield hub


@pytest.mark.parametrize("skew", SKEWS, ids=lambda s: f"edge{s:+.0f}s")
def test_a_skewed_edge_converges_with_the_hub_and_shows_the_skew(
    tmp_path: Path, broker: PrivateBroker, skew_hub: EmbeddedHub, skew: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.sync")
    index = SKEWS.index(skew)
    store, member = f"s{index + 1:03d}", subject_of(f"L-5{index:03d}")
    cfg = edge_settings(tmp_path, store, skew_hub.url, skew_hub.store_keys[store], broker.port)
    started = time.monotonic()
    with EmbeddedEdge(cfg, clock=lambda: time.time() + skew) as edge:
        store_db = edge.runtime.store
        # feeds converge: cursors are hub sequence numbers, never times
        wait_until(lambda: store_db.get_profile(member) and len(store_db.catalog()) == 3
                   and edge.runtime.service.verifier.key_ids, 15)
        baskets = [basket(new_id(), member if i % 2 else None, "p1") for i in range(6)]
        for sent in baskets:
            assert httpx.post(f"{edge.url}/v1/pos", json=sent, timeout=10).status_code == 202
        status = wait_status(edge.url, lambda s: s["outbox_pending"] == 0
                             and s["hub_clock_skew_s"] is not None)
        converged_s = time.monotonic() - started
        assert abs(status["hub_clock_skew_s"] - skew) < 2.0
        metrics = httpx.get(f"{edge.url}/metrics", timeout=5).text
        assert "storeside_hub_clock_skew_seconds" in metrics

        token = checkin_token(skew_hub.app_backend(), member, store)
        answer = httpx.post(f"{edge.url}/v1/checkin", timeout=10, json={
            "v": 1, "event_id": new_id(), "ts": time.time(), "token": token})
        if abs(skew) <= LEEWAY:
            assert answer.status_code == 200, answer.text
            outcome = "accepted"
        else:  # the documented limit: refused, and visible by its reason
            outcome = "expired" if skew > 0 else "not_yet_valid"
            assert answer.status_code == 401
            assert answer.json()["detail"]["reason"] == f"token_{outcome}"
            assert rejected(edge, outcome) == 1.0
        beat = last_beat(skew_hub, store)  # one more heartbeat: the warning is not repeated
        wait_until(lambda: last_beat(skew_hub, store) != beat, 10)
    warnings = [r for r in caplog.records if "clock is" in r.getMessage()]
    assert len(warnings) == (0 if abs(skew) <= LEEWAY else 1)  # once, not at every beat
    exactly_once(cfg.db_path, [b["event_id"] for b in baskets if b["subject"] is None])
    at_hub = hub_exactly_once_for(skew_hub, store, [b["event_id"] for b in baskets])
    record("clock_skew", induced=f"edge clock {skew:+.0f} s vs hub", store=store,
           measured_skew_s=status["hub_clock_skew_s"], converged_s=round(converged_s, 2),
           baskets=len(baskets), at_hub=at_hub, hub_token=outcome, lost=0, duplicates=0)


def last_beat(hub: EmbeddedHub, store: str) -> object:
    return edge_rows(hub.settings.db_path,
                     "SELECT received_at FROM store_status WHERE store_id = ?", store)


def hub_exactly_once_for(hub: EmbeddedHub, store: str, event_ids: list[str]) -> int:
    """``hub_exactly_once`` on one store's events (the module's hub serves several)."""
    found = edge_rows(hub.settings.db_path, "SELECT event_id FROM events WHERE store = ? AND "
                      "kind = 'pos_basket'", store)
    assert sorted(r[0] for r in found) == sorted(event_ids)
    return len(found)
