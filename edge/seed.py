"""Deterministic store seeding from the real Ta-Feng data, for tests, the benchmark and the demo.

Same zip + same arguments → byte-for-byte the same rows: every random choice comes from one
``random.Random(seed)`` consumed in sorted order, and nothing depends on dict/set order or the
wall clock (``now`` is a parameter and is used as every ``updated_at``).

Only a prefix of the file is read: rows are streamed in file (= date) order and reading stops
as soon as the most-sold products are known well enough and there are twice as many eligible
customers as members wanted; the members are the eligible customers with the most baskets.
Reading all 817k rows takes ~10 s; the default 1,000 products / 300 members reads ~90k.

Real customer ids never reach the store: subjects are HMAC pseudonyms and basket ids are
rebuilt from the subject.
"""

from __future__ import annotations

import io
import logging
import random
import statistics
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from edge.store import EdgeStore
from edge.store_rows import CatalogItem, Offer, Profile
from models.identity import pseudonymous_id  # re-exported: edge.seed.pseudonymous_id
from models.transactions import TAFENG_MEMBER, Transaction, read_tafeng

logger = logging.getLogger(__name__)

DEFAULT_ZONES = ("entrance", "fresh", "bakery", "dairy", "drinks", "household", "snacks",
                 "checkout")
MIN_BASKETS = 3  # "several baskets": enough history for recency/frequency features
CHECK_EVERY_ROWS = 10_000
ROWS_PER_PRODUCT = 40  # read at least this many rows per wanted product before stopping
DAY = 86_400.0

FIRST_NAMES = (
    "Ana", "Ben", "Chen", "Dana", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jonas", "Kai",
    "Lena", "Mei", "Nils", "Omar", "Paula", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Viktor",
    "Wen", "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carla", "Diego", "Eva", "Felix",
)
BRANDS = ("Greenfield", "Sunvale", "Nordmilk", "Crispo", "Bellabake", "Aquapure", "Homely",
          "Tastio", "Fresca", "Oakridge")
SIZES = ("single", "small", "medium", "large", "family pack")
NOTES = ("", "", "", "prefers organic", "lactose-free", "vegetarian", "likes trying new products",
         "shops for a large family")
GRANTED = {"personalize": True, "staff_display": True, "app_offers": True}
# consent_mix: member i gets variant i % 10 (exact shares, every variant present from 10 up).
CONSENT_VARIANTS = (
    *([GRANTED] * 6),
    {"personalize": False, "staff_display": True, "app_offers": False},
    {"personalize": True, "staff_display": False, "app_offers": True},
    {"personalize": True, "staff_display": True, "app_offers": False},
    {"personalize": True, "staff_display": False, "app_offers": False},
)


@dataclass
class SeedSummary:
    products: int
    members: int
    purchases: int
    subjects: list[str]  # the members' pseudonymous ids, in seeding order
    offers: int = 0
    rows_read: int = 0
    consent: dict[str, dict[str, bool]] = field(default_factory=dict)  # subject → consent


@dataclass
class _Scan:
    rows_read: int
    counts: Counter[str]  # product → lines (how often it was sold)
    prices: dict[str, list[float]]
    category: dict[str, str | None]
    by_customer: dict[str, list[Transaction]]


def _stream(tafeng_zip: Path) -> Iterator[Transaction]:
    with zipfile.ZipFile(tafeng_zip) as archive, archive.open(TAFENG_MEMBER) as raw:
        yield from read_tafeng(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))


def _top_products(counts: Counter[str], n: int) -> list[str]:
    return sorted(counts, key=lambda p: (-counts[p], p))[:n]


def _eligible(by_customer: dict[str, list[Transaction]], products: set[str]) -> list[str]:
    """Customers with at least MIN_BASKETS baskets containing catalog products, sorted."""
    out = []
    for customer, lines in by_customer.items():
        if len({t.basket_id for t in lines if t.product_id in products}) >= MIN_BASKETS:
            out.append(customer)
    return sorted(out)


def _scan(tafeng_zip: Path, n_products: int, n_members: int) -> _Scan:
    scan = _Scan(0, Counter(), defaultdict(list), {}, defaultdict(list))
    min_rows = ROWS_PER_PRODUCT * n_products
    for t in _stream(tafeng_zip):
        scan.rows_read += 1
        scan.counts[t.product_id] += 1
        if t.price is not None:
            scan.prices[t.product_id].append(t.price)
        scan.category.setdefault(t.product_id, t.category)
        scan.by_customer[t.customer_id].append(t)
        if scan.rows_read >= min_rows and scan.rows_read % CHECK_EVERY_ROWS == 0:
            top = _top_products(scan.counts, n_products)
            if len(top) >= n_products and (
                len(_eligible(scan.by_customer, set(top))) >= 2 * n_members
            ):
                break
    return scan


def _choose_members(scan: _Scan, products: set[str], n: int, rng: random.Random) -> list[str]:
    """The ``n`` eligible customers with the most baskets (ties in seeded random order):
    loyalty members are the regulars, and a longer history exercises more features."""
    eligible = _eligible(scan.by_customer, products)
    tie_break = {customer: rng.random() for customer in eligible}
    baskets = {
        c: len({t.basket_id for t in scan.by_customer[c] if t.product_id in products})
        for c in eligible
    }
    ranked = sorted(eligible, key=lambda c: (-baskets[c], tie_break[c]))
    return sorted(ranked[:n])


def _catalog(scan: _Scan, products: list[str], rng: random.Random, seed: int,
             zones: Sequence[str]) -> list[CatalogItem]:
    items = []
    per_category: Counter[str] = Counter()
    for product_id in products:  # most sold first: "#1" is a category's best seller
        category = scan.category[product_id]
        label = category or "misc"
        per_category[label] += 1
        prices = scan.prices.get(product_id)
        price = round(statistics.median(prices), 2) if prices else 0.0
        stock = 0 if rng.random() < 0.08 else rng.randint(1, 60)
        zone = zones[zlib.crc32(f"{seed}:{label}".encode()) % len(zones)] if zones else None
        items.append(CatalogItem(product_id, f"{label} #{per_category[label]}", category,
                                 price, stock, zone))
    return items


def _history(subject: str, lines: list[Transaction], catalog: dict[str, CatalogItem],
             end_ts: float) -> list[Transaction]:
    """The member's catalog lines, shifted so the last basket is at ``end_ts``."""
    kept = sorted((t for t in lines if t.product_id in catalog),
                  key=lambda t: (t.timestamp, t.basket_id, t.product_id))
    shift = end_ts - kept[-1].timestamp
    basket_no: dict[str, int] = {}
    out = []
    for t in kept:
        number = basket_no.setdefault(t.basket_id, len(basket_no) + 1)
        out.append(Transaction(subject, f"{subject}-b{number:03d}", t.timestamp + shift,
                               t.product_id, t.quantity, t.price,
                               catalog[t.product_id].category, None))
    return out


def _preferences(history: list[Transaction], rng: random.Random) -> dict[str, object]:
    by_category = Counter(t.category for t in history if t.category)
    top = sorted(by_category, key=lambda c: (-by_category[c], c))[: rng.randint(1, 2)]
    return {
        "sizes": {category: rng.choice(SIZES) for category in top},
        "brands": sorted(rng.sample(BRANDS, rng.randint(0, 2))),
        "notes": rng.choice(NOTES),
    }


def _tiers(spend: dict[str, float]) -> dict[str, str]:
    """Top 20% by spend gold, next 30% silver, the rest bronze."""
    ranked = sorted(spend, key=lambda s: (-spend[s], s))
    n = len(ranked)
    return {
        s: "gold" if i < 0.2 * n else "silver" if i < 0.5 * n else "bronze"
        for i, s in enumerate(ranked)
    }


def seed_store(
    store: EdgeStore,
    tafeng_zip: Path,
    *,
    n_products: int = 1000,
    n_members: int = 300,
    seed: int = 7,
    now: float,
    zones: Sequence[str] = DEFAULT_ZONES,
    consent_mix: bool = False,
    salt: str = "demo",
    home_store: str | None = None,
    n_offers: int = 10,
) -> SeedSummary:
    """Fill ``store`` with a catalog, members, their purchase history and a few offers.

    Re-seeding the same store is safe: catalog, profiles and offers are upserts and each
    member's history is replaced, not appended.
    """
    if n_products <= 0 or n_members < 0:
        raise ValueError("n_products must be > 0 and n_members >= 0")
    rng = random.Random(seed)
    scan = _scan(Path(tafeng_zip), n_products, max(n_members, 1))
    products = _top_products(scan.counts, n_products)
    items = _catalog(scan, products, rng, seed, zones)
    by_id = {item.product_id: item for item in items}
    chosen = _choose_members(scan, set(by_id), n_members, rng)

    histories: dict[str, list[Transaction]] = {}
    for customer in chosen:
        subject = pseudonymous_id(customer, salt)
        end_ts = now - rng.randint(1, 6) * DAY - rng.randint(0, 10 * 3600)
        histories[subject] = _history(subject, scan.by_customer[customer], by_id, end_ts)
    spend = {s: sum(t.quantity * (t.price or 0.0) for t in h) for s, h in histories.items()}
    tiers = _tiers(spend)
    profiles = []
    for i, (subject, history) in enumerate(histories.items()):
        birthday = date(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28))
        consent = CONSENT_VARIANTS[i % len(CONSENT_VARIANTS)] if consent_mix else GRANTED
        profiles.append(Profile(subject, rng.choice(FIRST_NAMES), tiers[subject],
                                birthday.isoformat(), _preferences(history, rng),
                                dict(consent), home_store))
    in_stock = [item for item in items if item.stock > 0]
    offered = rng.sample(in_stock, min(n_offers, len(in_stock)))
    offers = [
        Offer(f"offer-{seed}-{k:03d}", item.product_id, None, float(rng.choice((5, 10, 15, 20))),
              now - DAY, now + 14 * DAY)
        for k, item in enumerate(sorted(offered, key=lambda i: i.product_id), 1)
    ]

    store.upsert_catalog(items, now=now)
    store.upsert_offers(offers)
    store.upsert_profiles(profiles, now=now)
    purchases = store.replace_history([t for h in histories.values() for t in h], now=now)
    logger.info(
        "seeded %d products, %d members, %d purchase lines from %d Ta-Feng rows",
        len(items), len(profiles), purchases, scan.rows_read,
    )
    return SeedSummary(
        products=len(items), members=len(profiles), purchases=purchases,
        subjects=list(histories), offers=len(offers), rows_read=scan.rows_read,
        consent={p.subject: p.consent for p in profiles},
    )
