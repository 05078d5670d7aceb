"""A demo store made up from a seed: catalog, members, purchase histories, offers (pure).

Why synthetic rather than Ta-Feng (``edge.seed``): the demo has to run on a fresh machine
without the data set, and a newcomer should see readable products ("Merino crew-neck
sweater, navy") and members with sizes and brands, which Ta-Feng's numeric ids cannot give.
The purchase patterns have the structure the ranking model uses: each member has a few
favourites rebought on a rhythm, shops a few departments and explores within them.

Determinism: the same seed gives the same catalog and members whatever ``now`` is (the
simulator regenerates them to know who can check in and what they buy); only history
timestamps, birthdays and offer validity move with ``now``. Every random choice comes from a
``random.Random`` per part, consumed in a fixed order. No I/O except ``load_demo_store``, which
writes through the ``EdgeStore`` it is given.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from edge.demo_catalog import (
    APPAREL_SIZES,
    DEPARTMENTS,
    LINES,
    NOTES,
    SHOE_SIZES,
    ProductLine,
    style_id_of,
)
from edge.seed import FIRST_NAMES
from edge.seed import _tiers as spend_tiers
from edge.store import EdgeStore
from edge.store_rows import CatalogItem, Offer, Profile
from models.identity import pseudonymous_id
from models.transactions import Transaction

DAY = 86_400.0
HISTORY_DAYS = 180
OPEN_HOUR, CLOSE_HOUR = 9, 21
DEMO_STORE = "demo-001"

FULL = {"personalize": True, "staff_display": True, "app_offers": True}
NO_STAFF_DISPLAY = {"personalize": True, "staff_display": False, "app_offers": True}
NO_APP_OFFERS = {"personalize": True, "staff_display": True, "app_offers": False}
PERSONALIZE_ONLY = {"personalize": True, "staff_display": False, "app_offers": False}
# Every 20 members: 11 grant everything, 3 of each partial variant (exact shares).
CONSENT_PATTERN = (FULL,) * 11 + (NO_STAFF_DISPLAY,) * 3 + (NO_APP_OFFERS,) * 3 + (
    PERSONALIZE_ONLY,) * 3


@dataclass(frozen=True)
class DemoProduct:
    product_id: str
    name: str
    category: str
    zone: str
    price: float
    stock: int
    brand: str
    rebuy: float  # how likely a buyer buys it again (0..1)
    style_id: str | None = None  # shared by the variants of one base; None: no variants

    def catalog_item(self) -> CatalogItem:
        return CatalogItem(self.product_id, self.name, self.category, self.price, self.stock,
                           self.zone, self.style_id)


@dataclass(frozen=True)
class DemoMember:
    subject: str  # pseudonymous m-<hex>
    first_name: str
    consent: dict[str, bool]
    departments: tuple[str, ...]  # zones they shop, favourite first
    favourites: tuple[str, ...]  # product ids they rebuy
    visits_per_month: float
    app_share: float  # share of visits checked in with the app (the rest: card at the till)
    sizes: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[str, ...]:
        """What the member's app grants in a check-in token (their consent record)."""
        return tuple(purpose for purpose, granted in self.consent.items() if granted)


@dataclass(frozen=True)
class DemoPopulation:
    """The part that does not depend on the date: what the simulator needs."""

    seed: int
    products: tuple[DemoProduct, ...]
    members: tuple[DemoMember, ...]

    _index: dict[str, DemoProduct] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {p.product_id: p for p in self.products})

    def product(self, product_id: str) -> DemoProduct:
        return self._index[product_id]

    def in_zone(self, zone: str) -> list[DemoProduct]:
        return [p for p in self.products if p.zone == zone]


@dataclass(frozen=True)
class DemoStore:
    population: DemoPopulation
    profiles: list[Profile]
    history: list[Transaction]
    offers: list[Offer]

    @property
    def catalog(self) -> list[CatalogItem]:
        return [p.catalog_item() for p in self.population.products]


def _rng(seed: int, part: str) -> random.Random:
    return random.Random(f"storeside-demo:{seed}:{part}")


def _price(rng: random.Random, low: float, high: float) -> float:
    """Shelf prices end in .99 (or .49 / .99 under ten)."""
    raw = rng.uniform(low, high)
    if raw >= 10:
        return math.floor(raw) + 0.99
    return max(0.49, round(math.floor(raw * 2) / 2 - 0.01, 2))


def _line_products(line: ProductLine, rng: random.Random, start: int) -> list[DemoProduct]:
    out: list[DemoProduct] = []
    for base in line.bases:
        variants = (
            sorted(rng.sample(line.variants, min(len(line.variants), rng.randint(2, 4))),
                   key=line.variants.index)
            if line.variants else [None]
        )
        price = _price(rng, *line.price)
        brand = rng.choice(line.brands)
        style = style_id_of(base) if line.variants else None
        for variant in variants:
            name = f"{base}, {variant}" if variant else base
            out.append(DemoProduct(f"sku-{start + len(out):05d}", name, line.category,
                                   line.zone, price, rng.randint(4, 60), brand, line.rebuy,
                                   style))
    return out


def _catalog(seed: int) -> tuple[DemoProduct, ...]:
    rng = _rng(seed, "catalog")
    products: list[DemoProduct] = []
    for line in LINES:
        products += _line_products(line, rng, 10_001 + len(products))
    # About 7% out of stock, 10% running low: the rules must skip the former.
    out_of_stock = set(rng.sample(range(len(products)), max(1, len(products) * 7 // 100)))
    low = set(rng.sample(range(len(products)), len(products) // 10)) - out_of_stock
    return tuple(
        replace(p, stock=0 if i in out_of_stock else rng.randint(1, 3) if i in low else p.stock)
        for i, p in enumerate(products)
    )


def _member(i: int, seed: int, products: Sequence[DemoProduct], consent: dict[str, bool],
            rng: random.Random) -> DemoMember:
    departments = tuple(rng.sample(DEPARTMENTS, rng.choice((1, 2, 2, 3))))
    pool = [p for p in products if p.zone in departments]
    weights = [p.rebuy + 0.05 for p in pool]
    favourites: list[str] = []
    for _ in range(rng.randint(3, 7)):
        pick = rng.choices(pool, weights)[0].product_id
        if pick not in favourites:
            favourites.append(pick)
    # One clothing size and one shoe size per member, named per category they shop.
    size_of = {"apparel": rng.choice(APPAREL_SIZES), "shoes": rng.choice(SHOE_SIZES)}
    sized = {line.category: line.sized for line in LINES if line.sized}
    sizes = {category: size_of[sized[category]]
             for category in sorted({p.category for p in pool if p.category in sized})}
    return DemoMember(
        subject=pseudonymous_id(f"demo-member-{i:05d}", f"storeside-demo-{seed}"),
        first_name=rng.choice(FIRST_NAMES),
        consent=dict(consent),
        departments=departments,
        favourites=tuple(favourites),
        visits_per_month=round(rng.uniform(1.0, 6.0), 2),
        app_share=rng.choice((0.5, 0.8, 0.8, 1.0)),
        sizes=sizes,
    )


def demo_population(seed: int = 7, n_members: int = 300) -> DemoPopulation:
    """Catalog and members for ``seed``; the same whatever the date."""
    if n_members < 0:
        raise ValueError("n_members must be >= 0")
    products = _catalog(seed)
    rng = _rng(seed, "members")
    consents = [CONSENT_PATTERN[i % len(CONSENT_PATTERN)] for i in range(n_members)]
    rng.shuffle(consents)
    members = tuple(_member(i, seed, products, consents[i], rng) for i in range(n_members))
    return DemoPopulation(seed, products, members)


def member_basket(member: DemoMember, population: DemoPopulation, zones: Sequence[str],
                  rng: random.Random) -> list[tuple[DemoProduct, int]]:
    """One basket drawn from the member's habits: favourites by how rebuyable they are, plus
    a discovery or two in the zones walked through. Out-of-stock items are never bought."""
    chosen: dict[str, tuple[DemoProduct, int]] = {}
    for product_id in member.favourites:
        product = population.product(product_id)
        if product.stock > 0 and rng.random() < 0.15 + 0.6 * product.rebuy:
            chosen[product_id] = (product, rng.choice((1, 1, 2)) if product.rebuy > 0.5 else 1)
    for zone in zones:
        in_stock = [p for p in population.in_zone(zone) if p.stock > 0]
        if in_stock and rng.random() < 0.5:
            product = rng.choice(in_stock)
            chosen.setdefault(product.product_id, (product, 1))
    if not chosen:  # a basket has at least one line: the member's most rebought favourite
        for product_id in sorted(member.favourites,
                                 key=lambda p: -population.product(p).rebuy):
            product = population.product(product_id)
            if product.stock > 0:
                chosen[product_id] = (product, 1)
                break
    return list(chosen.values())


def _history(member: DemoMember, population: DemoPopulation, now: float,
             rng: random.Random) -> list[Transaction]:
    out: list[Transaction] = []
    t = now - HISTORY_DAYS * DAY
    mean_gap = 30.0 * DAY / member.visits_per_month
    day_of_now = math.floor(now / DAY) * DAY
    basket = 0
    while True:
        t += rng.expovariate(1.0 / mean_gap)
        day = math.floor(t / DAY) * DAY
        if day >= day_of_now:
            break
        ts = day + rng.uniform(OPEN_HOUR * 3600, CLOSE_HOUR * 3600)
        zones = member.departments[: rng.randint(1, len(member.departments))]
        basket += 1
        for product, quantity in member_basket(member, population, zones, rng):
            out.append(Transaction(member.subject, f"{member.subject}-h{basket:03d}", ts,
                                   product.product_id, float(quantity), product.price,
                                   product.category, None))
    return out


def _birthdays(members: Sequence[DemoMember], now: float, rng: random.Random) -> dict[str, str]:
    """A random date for everyone, then about 2.5% (at least 3) within two days of today."""
    today = datetime.fromtimestamp(now, UTC).date()
    out = {}
    for m in members:
        out[m.subject] = f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-" \
                         f"{rng.randint(1, 28):02d}"
    chosen = rng.sample(list(members), min(len(members), max(3, len(members) // 40)))
    for m in chosen:
        day = today + timedelta(days=rng.randint(-2, 2))
        year = rng.randint(1950, 2005)
        if day.month == 2 and day.day == 29:
            day = day.replace(day=28)
        out[m.subject] = day.replace(year=year).isoformat()
    return out


def _preferences(member: DemoMember, population: DemoPopulation,
                 rng: random.Random) -> dict[str, object]:
    brands = sorted({population.product(p).brand for p in member.favourites})
    return {
        "sizes": dict(member.sizes),
        "brands": brands[:3],
        "notes": rng.choice(NOTES),
    }


def _offers(population: DemoPopulation, now: float, rng: random.Random) -> list[Offer]:
    in_stock = [p for p in population.products if p.stock > 0]
    picked = sorted(rng.sample(in_stock, min(12, len(in_stock))), key=lambda p: p.product_id)
    offers = [Offer(f"demo-offer-{k:02d}", p.product_id, None, float(rng.choice((10, 15, 20))),
                    now - DAY, now + 14 * DAY) for k, p in enumerate(picked, 1)]
    offers.append(Offer("demo-offer-knit", None, "womens-knitwear", 20.0, now - DAY,
                        now + 7 * DAY))
    return offers


def generate_demo_store(seed: int = 7, *, now: float, n_members: int = 300,
                        home_store: str = DEMO_STORE) -> DemoStore:
    """Everything the demo edge starts with, for ``seed`` as of ``now`` (epoch seconds)."""
    population = demo_population(seed, n_members)
    rng = _rng(seed, "history")
    history: list[Transaction] = []
    spend: dict[str, float] = {}
    for member in population.members:
        lines = _history(member, population, now, rng)
        history += lines
        spend[member.subject] = sum(t.quantity * (t.price or 0.0) for t in lines)
    tiers = spend_tiers(spend)
    birthdays = _birthdays(population.members, now, rng)
    profiles = [
        Profile(m.subject, m.first_name, tiers[m.subject], birthdays[m.subject],
                _preferences(m, population, rng), dict(m.consent), home_store)
        for m in population.members
    ]
    return DemoStore(population, profiles, history, _offers(population, now, rng))


def load_demo_store(store: EdgeStore, demo: DemoStore, *, now: float) -> dict[str, int]:
    """Write the demo store through the edge's own bulk loaders; returns counts."""
    return {
        "products": store.upsert_catalog(demo.catalog, now=now),
        "offers": store.upsert_offers(demo.offers),
        "members": store.upsert_profiles(demo.profiles, now=now),
        "purchase_lines": store.replace_history(demo.history, now=now),
    }
