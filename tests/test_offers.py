"""Store offers at the edge: which offer applies (pure), its words, and how the edge keeps
segment offers' subjects (real SQLite: migration 5, the offers feed, erasure)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.offers import (
    AppliedOffer,
    OfferBook,
    StoreOffer,
    discounted,
    offer_reason,
    priced,
    until_text,
    with_offer_reasons,
)
from edge.rules import Candidate, CapState, CustomerContext, RulesConfig, decide
from edge.store import EdgeStore
from edge.sync_items import BadItem, OfferUpsert, Removal, offer_change
from models.reasons import Reason

TZ = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=TZ).timestamp()  # a Wednesday morning
DAY = 86_400.0
ALICE, BOB = "m-a11ce", "m-b0b"


def offer(oid: str, product: str | None = None, category: str | None = None, pct: float = 10,
          start: float = NOW - DAY, end: float = NOW + DAY,
          subjects: set[str] | None = None) -> StoreOffer:
    return StoreOffer(oid, product, category, pct, start, end,
                      frozenset(subjects) if subjects is not None else None)


def best(offers: list[StoreOffer], product: str = "p1", category: str | None = "tea",
         price: float = 10.0, subject: str | None = ALICE, now: float = NOW) -> str | None:
    applied = OfferBook(offers).best(product, category, price, subject, now)
    return applied.offer_id if applied else None


# ------------------------------------------------------------------------- choice


def test_a_product_offer_beats_a_bigger_category_offer() -> None:
    assert best([offer("cat", category="tea", pct=50), offer("prod", product="p1", pct=5)]) \
        == "prod"
    assert best([offer("cat", category="tea", pct=50)]) == "cat"
    assert best([offer("cat", category="cake", pct=50)]) is None
    assert best([offer("cat", category="tea")], category=None) is None


def test_then_the_highest_discount_then_the_earliest_end_then_the_id() -> None:
    assert best([offer("a", "p1", pct=10), offer("b", "p1", pct=20)]) == "b"
    assert best([offer("a", "p1", end=NOW + 2 * DAY), offer("b", "p1", end=NOW + DAY)]) == "b"
    assert best([offer("b", "p1"), offer("a", "p1")]) == "a"


def test_a_product_offer_naming_a_category_needs_both() -> None:
    both = offer("both", product="p1", category="cake")
    assert best([both], category="tea") is None
    assert best([both], category="cake") == "both"


def test_validity_is_from_inclusive_to_exclusive_on_the_edge_clock() -> None:
    o = offer("o", "p1", start=NOW, end=NOW + 60)
    assert best([o], now=NOW - 0.001) is None
    assert best([o], now=NOW) == "o"
    assert best([o], now=NOW + 59.999) == "o"
    assert best([o], now=NOW + 60) is None


def test_a_segment_offer_reaches_only_its_subjects() -> None:
    seg = offer("seg", "p1", pct=30, subjects={ALICE})
    everyone = offer("all", "p1", pct=10)
    assert best([seg, everyone], subject=ALICE) == "seg"
    assert best([seg, everyone], subject=BOB) == "all"
    assert best([seg, everyone], subject=None) == "all"  # anonymous / no personalize
    assert best([offer("none", "p1", subjects=set())], subject=ALICE) is None


def test_prices_after_the_discount() -> None:
    applied = OfferBook([offer("o", "p1", pct=15)]).best("p1", "tea", 39.0, None, NOW)
    assert applied is not None
    assert (applied.list_price, applied.price_after, applied.discount_pct) == (39.0, 33.15, 15)
    assert applied.as_dict() == {"offer_id": "o", "discount_pct": 15, "list_price": 39.0,
                                 "price_after": 33.15, "valid_to": NOW + DAY}
    assert discounted(9.99, 100) == 0.0 and discounted(0.0, 50) == 0.0
    assert best([offer("zero", "p1", pct=0)]) is None  # 0% is no offer


def test_the_book_maps_many_items_at_once() -> None:
    book = OfferBook([offer("prod", "p1", pct=20), offer("cat", category="cake", pct=10)])
    got = book.for_items([("p1", "tea", 10.0), ("p2", "cake", 4.0), ("p3", "tea", 1.0)],
                         None, NOW)
    assert {k: v.offer_id for k, v in got.items()} == {"p1": "prod", "p2": "cat"}
    assert OfferBook([]).for_items([("p1", "tea", 1.0)], None, NOW) == {}


# ------------------------------------------------------------------------- words


@pytest.mark.parametrize(("end", "text"), [
    (datetime(2026, 11, 25, 18, 0, tzinfo=TZ), "until 18:00"),
    (datetime(2026, 11, 26, 0, 0, tzinfo=TZ), "until midnight"),
    (datetime(2026, 11, 26, 20, 0, tzinfo=TZ), "until tomorrow"),
    (datetime(2026, 11, 30, 0, 0, tzinfo=TZ), "until Sun"),  # ends at midnight: Sunday's
    (datetime(2026, 11, 30, 9, 0, tzinfo=TZ), "until Mon"),
    (datetime(2026, 12, 14, 0, 0, tzinfo=TZ), "until 13 Dec"),
])
def test_until_reads_like_a_shop_assistant(end: datetime, text: str) -> None:
    assert until_text(end.timestamp(), NOW, TZ) == text


def test_the_offer_reason_is_personal_only_for_a_segment_offer() -> None:
    end = datetime(2026, 11, 30, 0, 0, tzinfo=TZ).timestamp()
    public = AppliedOffer("o", 15.0, 39.0, 33.15, end, targeted=False)
    member = AppliedOffer("s", 12.5, 39.0, 34.12, end, targeted=True)
    assert offer_reason(public, NOW, TZ) == Reason("offer", "15% off until Sun")
    assert not offer_reason(public, NOW, TZ).personal
    assert offer_reason(member, NOW, TZ) == Reason("member_offer", "12.5% off until Sun")
    assert offer_reason(member, NOW, TZ).personal


def candidate(pid: str, price: float, score: float = 1.0, category: str = "tea") -> Candidate:
    return Candidate(pid, pid.upper(), category, price, 5, None, score, 0.5,
                     (Reason("history", "bought once, last today"),))


def test_the_rules_judge_the_price_after_the_offer_and_the_offer_reason_leads() -> None:
    """Affordability: 3 x a typical item of 10 = 30; an item at 40 passes only at -25%."""
    applied = OfferBook([offer("o", "dear", pct=25)]).for_items([("dear", "tea", 40.0)],
                                                                 ALICE, NOW)
    customer = CustomerContext(frozenset({"personalize"}), None, 10.0)
    caps = CapState({}, frozenset(), 0, 0, 0)
    pool = [candidate("dear", 40.0), candidate("cheap", 5.0, score=0.5)]
    assert decide(pool, customer, caps, RulesConfig(), 12).dropped == {"dear": "unaffordable"}
    decision = decide(with_offer_reasons(priced(pool, applied), applied, NOW, TZ), customer,
                      caps, RulesConfig(), 12)
    first = decision.staff[0]
    assert (first.product_id, first.price) == ("dear", 30.0)
    assert [r.kind for r in first.reasons] == ["offer", "history"]
    assert decision.staff[1].reasons == pool[1].reasons


# ------------------------------------------------------------------------- properties

ids = st.sampled_from(["p1", "p2", "p3"])
cats = st.sampled_from(["tea", "cake", None])
offers_st = st.lists(st.builds(
    offer,
    st.text("abcdef", min_size=1, max_size=3),
    product=st.one_of(st.none(), ids),
    category=cats,
    pct=st.sampled_from([0, 5, 10, 12.5, 50, 100]),
    start=st.sampled_from([NOW - DAY, NOW, NOW + 1]),
    end=st.sampled_from([NOW, NOW + 1, NOW + DAY, NOW + 2 * DAY]),
    subjects=st.one_of(st.none(), st.sets(st.sampled_from([ALICE, BOB]), max_size=2)),
).filter(lambda o: o.valid_from < o.valid_to and (o.product_id or o.category)), max_size=8)


def _applies(o: StoreOffer, pid: str, category: str | None, subject: str | None) -> bool:
    if o.discount_pct <= 0 or not o.valid_from <= NOW < o.valid_to:
        return False
    if o.subjects is not None and subject not in o.subjects:
        return False
    if o.product_id is not None:
        return o.product_id == pid and o.category in (None, category)
    return o.category == category


@settings(max_examples=300, deadline=None)
@given(offers_st, ids, cats, st.sampled_from([ALICE, BOB, None]))
def test_the_choice_is_the_best_applicable_offer(offers, pid, category, subject) -> None:
    applicable = [o for o in offers if _applies(o, pid, category, subject)]
    got = OfferBook(offers).best(pid, category, 10.0, subject, NOW)
    if not applicable:
        assert got is None
        return
    expected = min(applicable, key=lambda o: (o.product_id is None, -o.discount_pct,
                                              o.valid_to, o.offer_id))
    assert got is not None and got.offer_id == expected.offer_id
    assert got.targeted == (expected.subjects is not None)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 10_000), st.floats(0, 100), st.floats(0, 100))
def test_a_bigger_discount_never_costs_more_and_never_goes_below_zero(price, a, b) -> None:
    low, high = sorted((a, b))
    assert 0.0 <= discounted(price, high) <= discounted(price, low) <= round(price, 2) + 0.005


# ------------------------------------------------------------------------- feed + store


def upsert(oid: str, subjects: list[str] | None = None, **fields: object) -> OfferUpsert:
    item: dict[str, object] = {"op": "upsert", "seq": 1, "offer_id": oid, "product_id": "p1",
                               "discount_pct": 10, "valid_from": NOW - DAY,
                               "valid_to": NOW + DAY, **fields}
    if subjects is not None:
        item.update(segment="gold", subjects=subjects)
    change = offer_change(item)
    assert isinstance(change, OfferUpsert)
    return change


def test_feed_items_carry_the_subjects_of_segment_offers() -> None:
    assert upsert("o").subjects is None
    seg = upsert("s", [BOB, ALICE, ALICE])
    assert (seg.segment, seg.subjects) == ("gold", (ALICE, BOB))
    assert upsert("e", []).subjects == ()
    with pytest.raises(BadItem, match="subjects"):
        offer_change({"op": "upsert", "offer_id": "x", "product_id": "p1", "discount_pct": 5,
                      "valid_from": 1, "valid_to": 2, "segment": "gold"})
    with pytest.raises(BadItem, match="subjects"):
        upsert("bad", subjects="m-1")  # type: ignore[arg-type]
    with pytest.raises(BadItem):
        upsert("bad", [ALICE, ""])


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    opened = EdgeStore(tmp_path / "edge.db")
    yield opened
    opened.close()


def page(store: EdgeStore, *upserts: OfferUpsert, removals: tuple[str, ...] = ()) -> None:
    store.apply_offers_page(list(upserts), [Removal(r, "deleted") for r in removals],
                            cursor="1", done_at=NOW)


def targets(store: EdgeStore) -> dict[str, frozenset[str] | None]:
    _, book = store.reader().offer_book(NOW)
    return {o.offer_id: o.subjects for group in book.by_product.values() for o in group}


def test_the_store_keeps_replaces_and_drops_targeting(store: EdgeStore) -> None:
    assert store.schema_version >= 5
    reader = store.reader()
    v0 = reader.offers_version()
    page(store, upsert("seg", [ALICE, BOB]), upsert("all"))
    assert targets(store) == {"seg": frozenset({ALICE, BOB}), "all": None}
    v1 = reader.offers_version()
    assert v1 > v0
    page(store, upsert("seg", [BOB]))  # the hub's list changed: replaced
    assert targets(store)["seg"] == frozenset({BOB})
    page(store, upsert("seg", []))  # still a segment offer, nobody eligible here
    assert targets(store)["seg"] == frozenset()
    page(store, upsert("seg"))  # no longer targeted: everyone
    assert targets(store)["seg"] is None
    page(store, upsert("seg", [ALICE]), removals=("all",))
    v2 = reader.offers_version()
    assert v2 > v1 and targets(store) == {"seg": frozenset({ALICE})}
    page(store, removals=("seg",))  # a delete takes the subjects along
    assert targets(store) == {} and reader.offers_version() > v2
    conn = reader._conn
    assert conn.execute("SELECT COUNT(*) FROM offer_subjects").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(*) FROM offer_segments").fetchone() == (0,)


def test_erasure_and_a_dropped_profile_leave_no_targeting(store: EdgeStore) -> None:
    page(store, upsert("seg", [ALICE, BOB]))
    store.delete_member(ALICE)
    assert targets(store)["seg"] == frozenset({BOB})
    store.apply_profile_page([], [Removal(BOB, "consent_revoked")], cursor="1", done_at=NOW,
                             now=NOW)
    assert targets(store)["seg"] == frozenset()  # still a segment offer: for nobody


def test_the_book_skips_offers_already_over(store: EdgeStore) -> None:
    page(store, upsert("old", valid_from=NOW - 2 * DAY, valid_to=NOW - DAY),
         upsert("soon", valid_from=NOW + DAY, valid_to=NOW + 2 * DAY))
    assert set(targets(store)) == {"soon"}  # loaded, applies from valid_from on


def test_an_offer_resent_unchanged_keeps_the_cache(store: EdgeStore) -> None:
    page(store, upsert("all", valid_to=NOW + DAY))
    version = store.reader().offers_version()
    page(store, upsert("all", valid_to=NOW + DAY))  # the feed re-reads a page
    assert store.reader().offers_version() == version
    page(store, upsert("all", valid_to=NOW + 2 * DAY))
    assert store.reader().offers_version() > version
