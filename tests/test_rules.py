"""Rules after scoring: one test per rule and per consent variant."""

from __future__ import annotations

import time

import pytest

from edge.rules import (
    APP_OFFER_BLOCKS,
    DROP_RULES,
    Candidate,
    CapState,
    CustomerContext,
    Decision,
    RulesConfig,
    affordability_limit,
    decide,
    in_quiet_hours,
)
from models.reasons import Reason

ALL = frozenset({"personalize", "staff_display", "app_offers"})
HISTORY = Reason("history", "bought 4 times, last 5 weeks ago")
COPURCHASE = Reason("copurchase", "often bought with milk")
POPULAR = Reason("popular", "popular here this morning")
NO_CAPS = CapState({}, frozenset(), 0, 0, 0)
CFG = RulesConfig()
DAY = 12


def cand(pid: str, score: float, *, category: str | None = None, price: float = 2.0,
         stock: int = 5, relevance: float = 0.5,
         reasons: tuple[Reason, ...] = (HISTORY, POPULAR)) -> Candidate:
    return Candidate(pid, f"item {pid}", category or f"cat-{pid}", price, stock, "z1", score,
                     relevance, reasons)


def customer(scopes: frozenset[str] = ALL, basket: float | None = 20.0,
             item: float | None = 2.5) -> CustomerContext:
    return CustomerContext(scopes, basket, item)


def run(cands: list[Candidate], cust: CustomerContext | None = None, caps: CapState = NO_CAPS,
        config: RulesConfig = CFG, hour: int = DAY) -> Decision:
    d = decide(cands, cust or customer(), caps, config, hour)
    assert set(d.dropped.values()) <= set(DROP_RULES)
    assert (d.app_offer is None) == (d.app_offer_blocked is not None)
    assert d.app_offer_blocked is None or d.app_offer_blocked in APP_OFFER_BLOCKS
    return d


def ids(d: Decision) -> list[str]:
    return [s.product_id for s in d.staff]


def test_ranks_by_score_and_numbers_from_one() -> None:
    d = run([cand("c", 0.1), cand("a", 0.9), cand("b", 0.5)])
    assert ids(d) == ["a", "b", "c"] and [s.rank for s in d.staff] == [1, 2, 3]
    assert d.app_offer is not None and d.app_offer.product_id == "a"
    assert d.dropped == {}


def test_top_n_limits_the_list_without_calling_the_rest_dropped() -> None:
    d = run([cand(str(i), i) for i in range(10)])
    assert ids(d) == ["9", "8", "7", "6", "5"] and d.dropped == {}


def test_out_of_stock_removed() -> None:
    d = run([cand("a", 0.9, stock=0), cand("b", 0.5, stock=-1), cand("c", 0.1)])
    assert ids(d) == ["c"]
    assert d.dropped == {"a": "out_of_stock", "b": "out_of_stock"}


def test_invalid_candidates_removed_and_duplicates_ignored() -> None:
    d = run([cand("a", float("nan")), cand("b", 0.5, price=-1), cand("c", 0.4),
             cand("c", 0.99, stock=0)])
    assert ids(d) == ["c"] and d.dropped == {"a": "invalid", "b": "invalid"}


def test_affordability_uses_typical_item_price() -> None:
    cands = [cand("cheap", 0.1, price=7.5), cand("pricey", 0.9, price=7.51)]
    d = run(cands, customer(item=2.5))  # limit 3 x 2.5 = 7.5
    assert ids(d) == ["cheap"] and d.dropped == {"pricey": "unaffordable"}
    assert d.staff[0].allowed_by == ("personalize",)  # spend data shaped the list


def test_affordability_falls_back_to_basket_value_then_no_filter() -> None:
    cands = [cand("a", 0.9, price=30.0), cand("b", 0.5, price=19.0)]
    assert ids(run(cands, customer(item=None, basket=20.0))) == ["b"]
    assert ids(run(cands, customer(item=None, basket=None))) == ["a", "b"]
    assert ids(run(cands, customer(item=0.0, basket=None))) == ["a", "b"]
    assert affordability_limit(customer(item=None, basket=None), CFG) is None


def test_without_personalize_spend_is_not_used_and_personal_reasons_are_hidden() -> None:
    cands = [cand("lux", 0.9, price=500.0, reasons=(HISTORY, COPURCHASE, POPULAR))]
    d = run(cands, customer(scopes=frozenset({"staff_display", "app_offers"}), item=1.0))
    assert ids(d) == ["lux"]  # no affordability filter: spend is personal data
    assert d.staff[0].reasons == (POPULAR,)
    assert d.staff[0].allowed_by == ("popular",)
    assert d.app_offer is not None and d.app_offer.reasons == (POPULAR,)
    assert d.app_offer.allowed_by == ("app_offers", "popular")


def test_with_personalize_reasons_are_kept_and_named() -> None:
    d = run([cand("a", 0.9, reasons=(HISTORY, POPULAR))], customer(basket=None, item=None))
    assert d.staff[0].reasons == (HISTORY, POPULAR)
    assert d.staff[0].allowed_by == ("personalize",)
    assert d.app_offer is not None and d.app_offer.allowed_by == ("app_offers", "personalize")
    # consent, but nothing personal informed it (no history, no spend): honest "popular"
    d = run([cand("a", 0.9, reasons=(POPULAR,))], customer(basket=None, item=None))
    assert d.staff[0].allowed_by == ("popular",)


def test_no_consent_at_all_gives_a_popular_staff_list_and_no_offer() -> None:
    d = run([cand("a", 0.9), cand("b", 0.5)], customer(scopes=frozenset(), item=0.1))
    assert ids(d) == ["a", "b"]
    assert all(s.allowed_by == ("popular",) and s.reasons == (POPULAR,) for s in d.staff)
    assert d.app_offer_blocked == "no_consent"


def test_dismissed_in_visit_never_again() -> None:
    caps = CapState({}, frozenset({"a"}), 0, 0, 0)
    d = run([cand("a", 0.9), cand("b", 0.5)], caps=caps)
    assert ids(d) == ["b"] and d.dropped == {"a": "dismissed"}


def test_item_shown_too_often_in_visit_removed() -> None:
    caps = CapState({"a": 2, "b": 1}, frozenset(), 3, 0, 0)
    d = run([cand("a", 0.9), cand("b", 0.5)], caps=caps)
    assert ids(d) == ["b"] and d.dropped == {"a": "shown_cap"}


def test_diversity_caps_categories_in_the_top_and_fills_from_lower_ranks() -> None:
    cands = [cand(f"m{i}", 0.9 - i / 100, category="milk") for i in range(4)]
    cands += [cand("bread", 0.5, category="bread"), cand("egg", 0.4, category="eggs"),
              cand("jam", 0.3, category="jam"), cand("tea", 0.2, category="tea")]
    d = run(cands)
    assert ids(d) == ["m0", "m1", "bread", "egg", "jam"]
    assert d.dropped == {"m2": "diversity", "m3": "diversity"}
    assert len(run(cands[:4]).staff) == 2  # nothing else to fill with: shorter list


def test_daily_impression_budget_shrinks_the_staff_list() -> None:
    cands = [cand(str(i), 1 - i / 10) for i in range(6)]
    d = run(cands, caps=CapState({}, frozenset(), 37, 0, 0))
    assert ids(d) == ["0", "1", "2"]
    assert d.dropped == {"3": "daily_cap", "4": "daily_cap"}
    assert d.app_offer_blocked == "capped"  # the budget is spent on the staff list
    d = run(cands, caps=CapState({}, frozenset(), 40, 0, 0))
    assert d.staff == () and d.app_offer_blocked == "capped"
    d = run(cands, caps=CapState({}, frozenset(), 34, 0, 0))
    assert len(d.staff) == 5 and d.app_offer is not None


@pytest.mark.parametrize("hour", [21, 23, 0, 7])
def test_quiet_hours_block_the_app_offer_only(hour: int) -> None:
    d = run([cand("a", 0.9)], hour=hour)
    assert ids(d) == ["a"] and d.app_offer_blocked == "quiet_hours"


@pytest.mark.parametrize("hour", [8, 12, 20])
def test_outside_quiet_hours_the_offer_goes_out(hour: int) -> None:
    assert run([cand("a", 0.9)], hour=hour).app_offer is not None


def test_quiet_hour_windows() -> None:
    assert in_quiet_hours(3, (1, 5)) and not in_quiet_hours(5, (1, 5))
    assert not any(in_quiet_hours(h, (0, 0)) for h in range(24))
    assert all(in_quiet_hours(h, (0, 24)) for h in range(24))
    assert in_quiet_hours(22, (21, 8)) and not in_quiet_hours(8, (21, 8))


def test_app_offer_below_relevance_threshold() -> None:
    d = run([cand("a", 0.9, relevance=0.049), cand("b", 0.5, relevance=0.9)])
    assert d.app_offer_blocked == "below_threshold"  # only the best one may be offered
    assert ids(d) == ["a", "b"]


@pytest.mark.parametrize(
    "caps",
    [CapState({}, frozenset(), 0, 2, 0), CapState({}, frozenset(), 0, 0, 1)],
    ids=["per_day", "per_visit"],
)
def test_app_offer_caps(caps: CapState) -> None:
    d = run([cand("a", 0.9)], caps=caps)
    assert d.app_offer_blocked == "capped" and ids(d) == ["a"]


def test_nothing_eligible() -> None:
    d = run([cand("a", 0.9, stock=0)])
    assert d.staff == () and d.app_offer_blocked == "nothing_eligible"
    assert run([]).app_offer_blocked == "nothing_eligible"


def test_block_precedence() -> None:
    caps = CapState({}, frozenset(), 0, 5, 5)
    no_offer = customer(scopes=frozenset({"personalize"}))
    assert run([cand("a", 0.9)], no_offer, caps, hour=22).app_offer_blocked == "no_consent"
    assert run([cand("a", 0.9)], caps=caps, hour=22).app_offer_blocked == "quiet_hours"
    assert run([], caps=caps).app_offer_blocked == "capped"


def test_app_offer_is_the_top_staff_suggestion() -> None:
    d = run([cand("a", 0.9, reasons=(HISTORY,)), cand("b", 0.8)])
    assert d.app_offer is not None
    top = d.staff[0]
    assert (d.app_offer.product_id, d.app_offer.rank, d.app_offer.reasons) == (
        top.product_id, 1, top.reasons)


@pytest.mark.parametrize("hour", [-1, 24, 12.5, True])
def test_bad_local_hour(hour: object) -> None:
    with pytest.raises(ValueError):
        decide([], customer(), NO_CAPS, CFG, hour)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [{"top_n": 0}, {"max_per_category_in_top": 0}, {"max_impressions_per_day": -1},
     {"affordability_multiple": 0.0}, {"quiet_hours": (21, 25)}, {"quiet_hours": (1, 2, 3)},
     {"app_offer_min_relevance": float("nan")}],
)
def test_config_is_validated(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RulesConfig(**kw)  # type: ignore[arg-type]


def test_decide_is_fast_on_a_full_catalog() -> None:
    cands = [cand(f"p{i}", (i * 7919) % 1000 / 1000, category=f"c{i % 40}",
                  price=1 + i % 30, stock=i % 11) for i in range(1000)]
    caps = CapState({f"p{i}": 2 for i in range(0, 1000, 13)}, frozenset({"p5"}), 10, 0, 0)
    start = time.perf_counter()
    for _ in range(20):
        d = run(cands, customer(item=4.0), caps)
    per_call_ms = (time.perf_counter() - start) / 20 * 1e3
    assert len(d.staff) == 5 and per_call_ms < 50, per_call_ms
