"""The plan of one simulated store day: timed events a store's apps and tills would send (pure).

Times are store seconds after opening (09:00); the simulator (``edge.simulator``) maps them
to the wall clock at a speed-up and fills in what only exists at send time (``ts``, the
signed check-in token). Same population, seed and day → the same events with the same ids.

What a member's app-using visit looks like, and why:
* geofence ``enter`` 1–3 minutes before the door (the phone sees the store's perimeter
  from the car park), then the check-in at the door with the scopes the member consented to;
* beacon sightings every 8–20 s in the zone the member is in (RSSI around −62 dBm with
  noise, integers as phones report them), the odd weak sighting of a neighbouring zone,
  and one weak reading of the old zone when walking away (the edge leaves a zone below
  −80 dBm: hysteresis);
* app feedback on the offer the edge sends (accepted / dismissed), sometimes ``redeemed``
  at the till; the product is filled in by the simulator from the offer it really got;
* a POS basket drawn from the member's own habits, then geofence ``exit``.
Some member visits are card-only (a basket with the subject, no app), and anonymous
shoppers only make baskets (subject null), which still count for store popularity.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.demo_store import DemoMember, DemoPopulation, DemoProduct, member_basket
from edge.topics import KIND_QOS, Topics

HOUR = 3600.0
OPEN_HOURS = 12  # 09:00–21:00
# Relative arrivals per opening hour: a quiet start, lunch and after-work peaks.
HOURLY_TRAFFIC = (1.3, 1.4, 1.5, 1.8, 1.6, 1.2, 1.2, 1.4, 1.8, 1.7, 1.2, 0.8)
EARLY_BIRDS = 6
MEMBER_VISIT_SHARE = 0.6  # share of members who come in on a given day
ANONYMOUS_PER_MEMBER_VISIT = 2.0
# Browsing, trying on, comparing: 4-15 minutes per department, 20-45 minutes a visit.
ZONE_DWELL_S = (240.0, 900.0)
CARD_ONLY_VISIT_S = (600.0, 2400.0)
IN_ZONE_RSSI, RSSI_NOISE = -62.0, 5.0
WEAK_RSSI = (-90, -82)  # below the edge's exit threshold (-80)
KINDS = ("geofence", "checkin", "beacon", "feedback", "pos")


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One message to publish ``at`` store seconds after opening."""

    at: float
    kind: str  # one of KINDS
    event_id: str
    subject: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)  # payload minus v/event_id/ts
    scopes: tuple[str, ...] = ()  # check-ins: what the member's token grants

    def payload(self, ts: float, token: str | None = None, run: str = "") -> dict[str, Any]:
        """The wire payload (edge.messages schema); a check-in needs its ``token``. ``run``
        prefixes event and basket ids, so a second run against the same edge is not taken
        for redeliveries of the first (the edge is idempotent by event id)."""
        prefix = f"{run}-" if run else ""
        body: dict[str, Any] = {"v": 1, "event_id": prefix + self.event_id, "ts": ts,
                                **self.fields}
        if "basket_id" in body:
            body["basket_id"] = prefix + body["basket_id"]
        if self.kind == "checkin":
            if token is None:
                raise ValueError("a check-in payload needs a token")
            body["token"] = token
        return body

    def topic(self, topics: Topics) -> str:
        if self.kind == "pos":
            return topics.pos
        assert self.subject is not None
        return topics.app(self.subject, self.kind)

    @property
    def qos(self) -> int:
        return KIND_QOS[self.kind]


class _Visit:
    """Collects one visit's events with ids ``<prefix>-<n>`` in time order."""

    def __init__(self, prefix: str, subject: str | None) -> None:
        self.prefix, self.subject = prefix, subject
        self.events: list[SimEvent] = []

    def add(self, at: float, kind: str, scopes: tuple[str, ...] = (), **fields: Any) -> None:
        if kind != "pos":
            fields = {"subject": self.subject, **fields} if kind != "checkin" else fields
        event_id = f"{self.prefix}-{len(self.events):03d}"
        self.events.append(SimEvent(at, kind, event_id, self.subject, fields, scopes))


def _order(event: SimEvent) -> tuple[float, str]:
    return (event.at, event.event_id)


def _arrivals(n: int, rng: random.Random) -> list[float]:
    """``n`` arrival times over the opening hours, by the hourly traffic curve."""
    hours = rng.choices(range(OPEN_HOURS), HOURLY_TRAFFIC, k=n)
    return sorted(h * HOUR + rng.uniform(0, HOUR) for h in hours)


def _rssi(rng: random.Random, mean: float = IN_ZONE_RSSI) -> int:
    return max(-100, min(-35, round(rng.gauss(mean, RSSI_NOISE))))


def _lines(basket: list[tuple[DemoProduct, int]]) -> list[dict[str, Any]]:
    return [{"product_id": p.product_id, "quantity": q, "unit_price": p.price}
            for p, q in basket]


def _neighbour(zone: str, zones: list[str], rng: random.Random) -> str:
    others = [z for z in zones if z != zone]
    return rng.choice(others) if others else zone


def _dwell(visit: _Visit, zone: str, start: float, seconds: float, all_zones: list[str],
           rng: random.Random) -> float:
    """Sightings in ``zone`` for ``seconds``; returns when the member leaves it."""
    t, end = start, start + seconds
    while t < end:
        visit.add(t, "beacon", zone=zone, beacon_id=f"bk-{zone}-{rng.randint(1, 2)}",
                  rssi=_rssi(rng))
        if rng.random() < 0.1:  # a neighbouring zone heard weakly through the shelves
            other = _neighbour(zone, all_zones, rng)
            visit.add(t + 1.0, "beacon", zone=other, beacon_id=f"bk-{other}-1",
                      rssi=rng.randint(*WEAK_RSSI))
        t += rng.uniform(8.0, 20.0)
    visit.add(end, "beacon", zone=zone, beacon_id=f"bk-{zone}-1",
              rssi=rng.randint(*WEAK_RSSI))  # walking away: below the exit threshold
    return end + rng.uniform(5.0, 20.0)


def _app_visit(member: DemoMember, population: DemoPopulation, prefix: str, arrival: float,
               all_zones: list[str], rng: random.Random,
               approach_s: tuple[float, float] = (60.0, 180.0)) -> list[SimEvent]:
    visit = _Visit(prefix, member.subject)
    visit.add(arrival, "geofence", transition="enter")
    door = arrival + rng.uniform(*approach_s)
    visit.add(door, "checkin", scopes=member.scopes)
    route = [z for z in member.departments if rng.random() < 0.8] or [member.departments[0]]
    t = _dwell(visit, "entrance", door + 2.0, rng.uniform(30.0, 90.0), all_zones, rng)
    reaction: str | None = None
    if "app_offers" in member.scopes:
        reaction = rng.choices(("accepted", "dismissed", None), (45, 35, 20))[0]
    placeholder = member.favourites[0]  # replaced by the offered product when sending
    if reaction is not None:
        visit.add(door + rng.uniform(60.0, 240.0), "feedback", product_id=placeholder,
                  visit_id=None, action=reaction, channel="app")
    for zone in route:
        t = _dwell(visit, zone, t, rng.uniform(*ZONE_DWELL_S), all_zones, rng)
    t = _dwell(visit, "checkout", t, rng.uniform(120.0, 300.0), all_zones, rng)
    if reaction == "accepted" and rng.random() < 0.5:
        visit.add(t - 2.0, "feedback", product_id=placeholder, visit_id=None,
                  action="redeemed", channel="app")
    basket = member_basket(member, population, route, rng)
    if basket and rng.random() < 0.85:  # most members buy something
        visit.add(t, "pos", basket_id=f"{prefix}-till", subject=member.subject,
                  lines=_lines(basket))
    visit.add(t + rng.uniform(30.0, 90.0), "geofence", transition="exit")
    return sorted(visit.events, key=_order)


def _card_visit(member: DemoMember, population: DemoPopulation, prefix: str, arrival: float,
                rng: random.Random) -> list[SimEvent]:
    visit = _Visit(prefix, member.subject)
    zones = list(member.departments[: rng.randint(1, len(member.departments))])
    basket = member_basket(member, population, zones, rng)
    if basket:
        visit.add(arrival + rng.uniform(*CARD_ONLY_VISIT_S), "pos", basket_id=f"{prefix}-till",
                  subject=member.subject, lines=_lines(basket))
    return visit.events


def _anonymous_basket(prefix: str, at: float, in_stock: list[DemoProduct],
                      weights: list[float], rng: random.Random) -> list[SimEvent]:
    picked = {p.product_id: p for p in rng.choices(in_stock, weights, k=rng.randint(1, 4))}
    visit = _Visit(prefix, None)
    visit.add(at, "pos", basket_id=f"{prefix}-till", subject=None,
              lines=_lines([(p, 1) for p in picked.values()]))
    return visit.events


def plan_day(population: DemoPopulation, *, seed: int, day: int = 0,
             start_s: float = 0.0, end_s: float = math.inf) -> Iterator[SimEvent]:
    """Events of store day ``day`` between ``start_s`` and ``end_s``, in time order.
    Customers arrive until closing time; the last ones finish their visit after it.

    Every event id starts with ``d<day>-`` and is unique within the day; ties in time are
    broken by id, so the order is total and reproducible.
    """
    rng = random.Random(f"storeside-sim:{seed}:{day}")
    all_zones = sorted({p.zone for p in population.products})
    members = list(population.members)
    visitors = rng.sample(members, round(len(members) * MEMBER_VISIT_SHARE))
    arrivals = _arrivals(len(visitors), rng)
    # A few regulars wait for the doors to open, with the app: the tablet shows customers
    # from the first store minutes on, not only once the late-morning traffic builds up.
    early = min(EARLY_BIRDS, len(arrivals))
    arrivals[:early] = sorted(rng.uniform(0.0, 10.0 + 200.0 * k) for k in range(early))
    streams: list[list[SimEvent]] = []
    for k, (member, arrival) in enumerate(zip(visitors, arrivals, strict=True)):
        prefix = f"d{day}-m{k:04d}"
        if k < early:
            streams.append(_app_visit(member, population, prefix, arrival, all_zones, rng,
                                      approach_s=(30.0, 60.0)))
        elif rng.random() < member.app_share:
            streams.append(_app_visit(member, population, prefix, arrival, all_zones, rng))
        else:
            streams.append(_card_visit(member, population, prefix, arrival, rng))
    # Zipf-like store popularity in a seeded order: what anonymous shoppers pick from.
    in_stock = [p for p in population.products if p.stock > 0]
    rng.shuffle(in_stock)
    weights = [1.0 / rank**0.8 for rank in range(1, len(in_stock) + 1)]
    n_anonymous = round(len(visitors) * ANONYMOUS_PER_MEMBER_VISIT) if in_stock else 0
    for k, at in enumerate(_arrivals(n_anonymous, rng)):
        streams.append(_anonymous_basket(f"d{day}-a{k:04d}", at, in_stock, weights, rng))
    for event in heapq.merge(*streams, key=_order):
        if start_s <= event.at < end_s:
            yield event
