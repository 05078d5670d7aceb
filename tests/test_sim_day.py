"""The simulated store day: order, ids, schema-valid payloads, a believable visit."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from edge.demo_store import DemoPopulation, demo_population
from edge.messages import parse_inbound
from edge.sim_day import HOUR, KINDS, OPEN_HOURS, SimEvent, plan_day
from edge.topics import Topics

TS = 1_790_000_000.0
FAKE_TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
TOPICS = Topics("demo", "demo-001")


@pytest.fixture(scope="module")
def population() -> DemoPopulation:
    return demo_population(7, 300)


@pytest.fixture(scope="module")
def day(population: DemoPopulation) -> list[SimEvent]:
    return list(plan_day(population, seed=7, day=0))


def test_ordered_unique_ids_and_reproducible(population: DemoPopulation,
                                             day: list[SimEvent]) -> None:
    assert [(e.at, e.event_id) for e in day] == sorted((e.at, e.event_id) for e in day)
    assert len({e.event_id for e in day}) == len(day)
    assert day[0].at >= 0 and day[-1].at < OPEN_HOURS * HOUR + 3600
    assert list(plan_day(population, seed=7, day=0)) == day
    other = list(plan_day(population, seed=7, day=1))
    assert [e.event_id for e in other][:50] != [e.event_id for e in day][:50] or \
        [e.at for e in other][:50] != [e.at for e in day][:50]
    assert all(e.event_id.startswith("d1-") for e in other)


def test_every_kind_present_and_the_store_opens_busy(day: list[SimEvent]) -> None:
    kinds = Counter(e.kind for e in day)
    assert set(kinds) == set(KINDS)
    assert kinds["checkin"] >= 100 and kinds["pos"] >= 300 and kinds["beacon"] > 5000
    first_checkin = next(e for e in day if e.kind == "checkin")
    assert first_checkin.at < 5 * 60  # a newcomer sees a customer within seconds


def test_payloads_are_schema_valid_on_their_topics(day: list[SimEvent]) -> None:
    for event in day:
        topic = event.topic(TOPICS)
        kind, subject = TOPICS.route(topic) or (None, None)
        assert kind == event.kind
        payload = json.dumps(event.payload(TS, FAKE_TOKEN, run="r1")).encode()
        msg = parse_inbound(kind, payload, subject=subject)
        assert msg.event_id == f"r1-{event.event_id}"
        if event.kind == "beacon":
            assert isinstance(json.loads(payload)["rssi"], int)
        if event.kind == "pos":
            assert msg.basket_id.startswith("r1-")  # type: ignore[union-attr]


def test_a_checkin_needs_a_token(day: list[SimEvent]) -> None:
    checkin = next(e for e in day if e.kind == "checkin")
    with pytest.raises(ValueError, match="token"):
        checkin.payload(TS)


def test_member_visits_tell_a_story(population: DemoPopulation, day: list[SimEvent]) -> None:
    members = {m.subject: m for m in population.members}
    zones = {p.zone for p in population.products}
    by_subject: dict[str, list[SimEvent]] = defaultdict(list)
    for event in day:
        if event.subject is not None:
            by_subject[event.subject].append(event)
    scopes_seen = set()
    for subject, events in by_subject.items():
        kinds = [e.kind for e in events]
        if "checkin" not in kinds:  # card-only visit: one basket with the member's id
            assert kinds == ["pos"]
            continue
        assert kinds[0] == "geofence" and events[0].fields["transition"] == "enter"
        assert kinds[1] == "checkin" and kinds[-1] == "geofence"
        assert events[-1].fields["transition"] == "exit"
        checkin = events[1]
        assert checkin.scopes == members[subject].scopes
        scopes_seen.add(checkin.scopes)
        beacons = [e for e in events if e.kind == "beacon"]
        assert beacons[0].fields["zone"] == "entrance"
        assert {e.fields["zone"] for e in beacons} <= zones
        assert any(e.fields["zone"] == "checkout" for e in beacons)
        assert all(-100 <= e.fields["rssi"] <= -35 for e in beacons)
        if "feedback" in kinds:
            assert "app_offers" in checkin.scopes
            assert all(e.at > checkin.at for e in events if e.kind == "feedback")
    assert len(scopes_seen) == 4  # full and partial consents all check in


def test_anonymous_shoppers_only_buy_in_stock_items(population: DemoPopulation,
                                                    day: list[SimEvent]) -> None:
    stock = {p.product_id: p.stock for p in population.products}
    anonymous = [e for e in day if e.subject is None]
    assert anonymous and all(e.kind == "pos" and e.fields["subject"] is None
                             for e in anonymous)
    for event in (e for e in day if e.kind == "pos"):
        assert all(stock[line["product_id"]] > 0 for line in event.fields["lines"])


def test_a_window_is_a_slice_of_the_day(population: DemoPopulation,
                                        day: list[SimEvent]) -> None:
    window = list(plan_day(population, seed=7, start_s=HOUR, end_s=2 * HOUR))
    assert window == [e for e in day if HOUR <= e.at < 2 * HOUR]
