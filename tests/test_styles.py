"""Styles and variants, pure parts: one suggestion per style (rules), its other variants
named on the staff card (cards), and the labels that tell the variants apart."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cards import MAX_VARIANTS, staff_card, variant_labels, variants_of
from edge.rules import (
    DROP_RULES,
    Candidate,
    CapState,
    CustomerContext,
    RulesConfig,
    decide,
    style_key,
)
from edge.store_rows import CatalogItem
from models.reasons import Reason

ALL = frozenset({"personalize", "staff_display", "app_offers"})
ANYONE = CustomerContext(ALL, None, None)  # no spend known: no affordability filter
NO_CAPS = CapState({}, frozenset(), 0, 0, 0)
CFG = RulesConfig(quiet_hours=(0, 0))
POPULAR = Reason("popular", "popular here this week")


def cand(pid: str, score: float, style: str | None, *, category: str = "hats",
         name: str | None = None, stock: int = 5) -> Candidate:
    return Candidate(pid, name or f"item {pid}", category, 20.0, stock, "entrance", score, 0.5,
                     (POPULAR,), style_id=style)


def beanies() -> list[Candidate]:
    return [cand("b-grey", 0.9, "beanie", name="Wool beanie, grey"),
            cand("b-navy", 0.8, "beanie", name="Wool beanie, navy"),
            cand("b-mustard", 0.95, "beanie", name="Wool beanie, mustard", stock=0),
            cand("scarf", 0.7, None, category="scarves"),
            cand("gloves", 0.6, "gloves", category="gloves")]


def test_one_suggestion_per_style_the_best_in_stock_variant() -> None:
    d = decide(beanies(), ANYONE, NO_CAPS, CFG, 12)
    assert [s.product_id for s in d.staff] == ["b-grey", "scarf", "gloves"]
    assert d.dropped == {"b-mustard": "out_of_stock", "b-navy": "same_style"}
    assert d.app_offer is not None and d.app_offer.product_id == "b-grey"
    assert d.staff[0].style_id == "beanie"  # the card finds the other variants by it
    assert "same_style" in DROP_RULES


def test_a_freed_slot_goes_to_the_next_style_and_diversity_still_holds() -> None:
    """Two hat styles in three colours each: one slot per style, two per category, the
    rest of the list filled from other categories (not from a third colour)."""
    cands = [cand(f"{style}-{c}", score, style) for style, base in (("a", 0.9), ("b", 0.8))
             for c, score in (("x", base), ("y", base - 0.01), ("z", base - 0.02))]
    cands += [cand("h3", 0.5, "c"), cand("tea", 0.4, None, category="tea")]
    d = decide(cands, ANYONE, NO_CAPS, CFG, 12)
    assert [s.product_id for s in d.staff] == ["a-x", "b-x", "tea"]
    assert d.dropped["h3"] == "diversity"
    assert {d.dropped[p] for p in ("a-y", "a-z", "b-y", "b-z")} == {"same_style"}


def test_a_dismissed_variant_hides_the_style_when_the_store_lists_its_siblings() -> None:
    """The store puts a dismissed product's whole style in ``dismissed_in_visit``
    (edge.store_reader.cap_counts); the rules then never pick another colour."""
    caps = CapState({}, frozenset({"b-grey", "b-navy", "b-mustard"}), 0, 0, 0)
    d = decide(beanies(), ANYONE, caps, CFG, 12)
    assert [s.product_id for s in d.staff] == ["scarf", "gloves"]
    assert d.dropped["b-navy"] == "dismissed"


def test_a_product_id_never_collides_with_a_style_id_of_the_same_spelling() -> None:
    assert style_key("beanie", None) != style_key("x", "beanie")
    d = decide([cand("beanie", 0.9, None, category="a"), cand("x", 0.8, "beanie", category="b")],
               ANYONE, NO_CAPS, CFG, 12)
    assert len(d.staff) == 2


CANDIDATES = st.lists(
    st.builds(
        cand,
        pid=st.text("abcdefgh", min_size=1, max_size=3),
        score=st.floats(0, 1),
        style=st.one_of(st.none(), st.sampled_from(["s1", "s2", "s3", "s4"])),
        category=st.sampled_from(["hats", "scarves", "tea", "socks"]),
        stock=st.integers(0, 3),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(CANDIDATES, st.integers(1, 8), st.integers(1, 3))
def test_never_two_suggestions_of_one_style(cands: list[Candidate], top_n: int,
                                            per_category: int) -> None:
    config = RulesConfig(top_n=top_n, max_per_category_in_top=per_category)
    d = decide(cands, ANYONE, NO_CAPS, config, 12)
    keys = [style_key(s.product_id, s.style_id) for s in d.staff]
    assert len(keys) == len(set(keys))
    assert len(d.staff) <= top_n
    # each suggestion is the best in-stock variant of its style (first occurrence of an id)
    first: dict[str, Candidate] = {}
    for c in cands:
        first.setdefault(c.product_id, c)
    for s in d.staff:
        rivals = [c for c in first.values() if c.stock > 0
                  and style_key(c.product_id, c.style_id) == style_key(s.product_id, s.style_id)]
        best = min(rivals, key=lambda c: (-c.score, -c.relevance, c.product_id))
        assert s.product_id == best.product_id
    if d.app_offer is not None:
        assert d.app_offer.product_id == d.staff[0].product_id


# --------------------------------------------------------------------------- the card


def test_variant_labels_name_the_part_that_differs() -> None:
    assert variant_labels("Wool beanie, grey", ["Wool beanie, navy", "Wool beanie, green"]) \
        == ["navy", "green"]
    assert variant_labels("Scented candle", ["Scented candle, amber"]) == ["amber"]
    assert variant_labels("Eau de parfum 50 ml", ["Eau de parfum 100 ml"]) == ["100 ml"]
    assert variant_labels("Scented candle, amber", ["Scented candle"]) == ["Scented candle"]
    assert variant_labels("Tea", ["Coffee beans"]) == ["Coffee beans"]  # nothing shared
    assert variant_labels("A", []) == []


def test_card_lists_the_other_in_stock_variants_of_the_suggested_style() -> None:
    d = decide(beanies(), ANYONE, NO_CAPS, CFG, 12)
    catalog = {
        "beanie": [CatalogItem("b-grey", "Wool beanie, grey", "hats", 20.0, 5, "entrance",
                               "beanie"),
                   CatalogItem("b-navy", "Wool beanie, navy", "hats", 20.0, 2, "entrance",
                               "beanie"),
                   CatalogItem("b-mustard", "Wool beanie, mustard", "hats", 20.0, 0,
                               "entrance", "beanie")],
        "gloves": [CatalogItem("gloves", "item gloves", "gloves", 20.0, 5, None, "gloves")],
    }
    card = staff_card(
        event_id="e1", ts=0.0, visit_id="v1", subject="m-0123456789abcdef", scopes=ALL,
        zone=None, dwell_since=None, trigger="checkin", trigger_event_id="c1",
        source="model", model_version="1", decision=d, profile=None, today=date(2026, 1, 5),
        styles=lambda style: catalog.get(style, []) if style else [],
    )
    by_id = {s["product_id"]: s for s in card["suggestions"]}
    assert by_id["b-grey"]["variants"] == [{"product_id": "b-navy", "name": "navy", "stock": 2}]
    assert by_id["scarf"]["variants"] == [] and by_id["gloves"]["variants"] == []


def test_variants_are_short() -> None:
    suggestion = decide([cand("v0", 0.9, "big", name="Socks, colour 0")], ANYONE, NO_CAPS,
                        CFG, 12).staff[0]
    items = [CatalogItem(f"v{i}", f"Socks, colour {i}", "socks", 5.0, 3, None, "big")
             for i in range(12)]
    variants = variants_of(suggestion, items)
    assert len(variants) == MAX_VARIANTS
    assert [v["name"] for v in variants[:2]] == ["1", "2"]
    assert all(v["product_id"] != "v0" for v in variants)
