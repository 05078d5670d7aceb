"""The demo store generator: deterministic, readable, mixed consents, loads into an edge."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

from edge.cards import birthday_this_week
from edge.demo_catalog import ZONES
from edge.demo_store import (
    FULL,
    NO_APP_OFFERS,
    NO_STAFF_DISPLAY,
    PERSONALIZE_ONLY,
    demo_population,
    generate_demo_store,
    load_demo_store,
)
from edge.messages import ID_PATTERN
from edge.store import EdgeStore

NOW = 1_790_000_000.0  # 2026-09-21, a Monday
READABLE = re.compile(r"^[A-Z][A-Za-z0-9 ,&%€.'-]+$")


def test_same_seed_same_store_other_seed_other_store() -> None:
    a = generate_demo_store(7, now=NOW, n_members=60)
    b = generate_demo_store(7, now=NOW, n_members=60)
    c = generate_demo_store(8, now=NOW, n_members=60)
    assert a == b
    assert a.catalog != c.catalog
    assert [p.subject for p in a.profiles] != [p.subject for p in c.profiles]


def test_catalog_and_members_do_not_depend_on_the_date() -> None:
    """The simulator regenerates them later than the store was seeded: they must agree."""
    early = generate_demo_store(7, now=NOW, n_members=50)
    late = generate_demo_store(7, now=NOW + 3 * 86_400 + 123.4, n_members=50)
    assert early.population == late.population == demo_population(7, 50)
    assert early.history != late.history  # timestamps follow "now"


def test_catalog_is_readable_priced_stocked_and_zoned() -> None:
    products = demo_population(7, 0).products
    assert len(products) >= 120
    assert len({p.product_id for p in products}) == len(products)
    assert all(re.match(ID_PATTERN, p.product_id) for p in products)
    assert all(READABLE.match(p.name) and " " in p.name for p in products)
    assert "Merino crew-neck sweater" in {p.name.split(",")[0] for p in products}
    assert {p.zone for p in products} == set(ZONES)
    assert len({p.category for p in products}) >= 15
    assert all(p.price > 0 for p in products)
    stock = Counter("out" if p.stock == 0 else "low" if p.stock <= 3 else "ok" for p in products)
    assert stock["out"] >= 5 and stock["low"] >= 5 and stock["ok"] > len(products) / 2


def test_variants_of_one_product_share_a_style_id() -> None:
    """"Wool beanie, grey" and "Wool beanie, navy" are one style: the edge suggests it once."""
    products = demo_population(7, 0).products
    styles: dict[str, set[str]] = {}
    for p in products:
        if p.style_id is not None:
            styles.setdefault(p.style_id, set()).add(p.name.rsplit(", ", 1)[0])
    assert styles["style-wool-beanie"] == {"Wool beanie"}
    assert all(len(bases) == 1 for bases in styles.values())  # one base per style...
    assert len({b for bases in styles.values() for b in bases}) == len(styles)  # ...and back
    sizes = Counter(p.style_id for p in products if p.style_id is not None)
    assert min(sizes.values()) >= 2 and len(sizes) >= 30
    assert all(re.match(ID_PATTERN, style) for style in sizes)
    single = [p for p in products if p.style_id is None]  # no variants: a style of its own
    assert single and all(sum(q.name == p.name for q in products) == 1 for p in single)
    assert "Linen napkins, set of 4" in {p.name for p in single}


def test_members_are_pseudonymous_with_mixed_consents() -> None:
    members = demo_population(7, 300).members
    assert len({m.subject for m in members}) == 300
    assert all(re.fullmatch(r"m-[0-9a-f]{16}", m.subject) for m in members)
    variants = Counter(tuple(sorted(m.consent.items())) for m in members)
    assert variants == {
        tuple(sorted(FULL.items())): 165,
        tuple(sorted(NO_STAFF_DISPLAY.items())): 45,
        tuple(sorted(NO_APP_OFFERS.items())): 45,
        tuple(sorted(PERSONALIZE_ONLY.items())): 45,
    }
    assert {m.scopes for m in members} == {
        ("personalize", "staff_display", "app_offers"), ("personalize", "app_offers"),
        ("personalize", "staff_display"), ("personalize",),
    }
    assert all(m.favourites and m.departments for m in members)


def test_profiles_tiers_birthdays_preferences() -> None:
    demo = generate_demo_store(7, now=NOW, n_members=300)
    today = datetime.fromtimestamp(NOW, UTC).date()
    assert Counter(p.tier for p in demo.profiles) == {"gold": 60, "silver": 90, "bronze": 150}
    birthdays = [p for p in demo.profiles if birthday_this_week(p.birthday, today)]
    assert 7 <= len(birthdays) <= 30
    for p in demo.profiles:
        date.fromisoformat(p.birthday or "")
        assert set(p.preferences) == {"sizes", "brands", "notes"}
        assert p.preferences["brands"]
    sized = [p for p in demo.profiles if p.preferences["sizes"]]
    assert len(sized) > 150
    assert any("footwear" in p.preferences["sizes"] for p in sized)


def test_histories_repeat_favourites_inside_opening_hours() -> None:
    demo = generate_demo_store(7, now=NOW, n_members=100)
    today = datetime.fromtimestamp(NOW, UTC).date()
    by_member: dict[str, list] = {}
    for t in demo.history:
        by_member.setdefault(t.customer_id, []).append(t)
        assert datetime.fromtimestamp(t.timestamp, UTC).date() < today  # before today
        assert 9 <= datetime.fromtimestamp(t.timestamp, UTC).hour < 21
    catalog = {p.product_id: p for p in demo.population.products}
    assert all(catalog[t.product_id].stock > 0 for t in demo.history)
    repeaters = 0
    for lines in by_member.values():
        baskets_per_product = Counter(t.product_id for t in lines)
        repeaters += max(baskets_per_product.values()) >= 3
    assert len(by_member) >= 95
    assert repeaters >= 80  # habits: most members rebuy something again and again


def test_loads_into_the_edge_store(tmp_path: Path) -> None:
    demo = generate_demo_store(7, now=NOW, n_members=40)
    with EdgeStore(tmp_path / "edge.db") as store:
        counts = load_demo_store(store, demo, now=NOW)
        assert counts == {"products": len(demo.catalog), "offers": len(demo.offers),
                          "members": 40, "purchase_lines": len(demo.history)}
        assert {i.name for i in store.catalog()} == {p.name for p in demo.population.products}
        assert {(i.product_id, i.style_id) for i in store.catalog()} == {
            (p.product_id, p.style_id) for p in demo.population.products}
        subject = demo.profiles[0].subject
        profile = store.get_profile(subject)
        assert profile is not None and profile.consent == demo.profiles[0].consent
        assert store.purchase_history(subject)
        assert len(store.active_offers(NOW)) == len(demo.offers)
