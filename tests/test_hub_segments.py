"""Segment rules (pure): validation errors name the path; evaluation follows boolean logic."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.segments import (
    DAY_S,
    FIELDS,
    NUMBER,
    SegmentRuleError,
    compile_rule,
    evaluate,
    member_facts,
)

NOW = 1_700_000_000.0

GOLD_ACTIVE = {"all": [
    {"field": "total_spend", "op": ">=", "value": 500},
    {"field": "tier", "op": "in", "value": ["gold"]},
    {"field": "days_since_last_purchase", "op": "<=", "value": 30},
]}


def facts(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(baskets=10, total_spend=800.0, last_purchase_ts=NOW - 5 * DAY_S,
                                tier="gold", home_store="s1", now=NOW)
    base.update(kw)
    return member_facts(**base)


def test_brief_example_matches_only_active_gold_big_spenders() -> None:
    seg = compile_rule(GOLD_ACTIVE)
    assert seg.matches(facts())
    assert not seg.matches(facts(tier="silver"))
    assert not seg.matches(facts(total_spend=499.99))
    assert not seg.matches(facts(last_purchase_ts=NOW - 31 * DAY_S))
    assert seg.fields == {"total_spend", "tier", "days_since_last_purchase"}


def test_missing_values_never_match_a_comparison_but_exists_and_not_see_them() -> None:
    never_bought = facts(baskets=0, total_spend=0.0, last_purchase_ts=None, tier=None)
    assert never_bought["days_since_last_purchase"] is None
    assert never_bought["mean_basket_spend"] is None
    for rule in ({"field": "tier", "op": "!=", "value": "gold"},
                 {"field": "tier", "op": "not_in", "value": ["gold"]},
                 {"field": "days_since_last_purchase", "op": ">", "value": 0}):
        assert not compile_rule(rule).matches(never_bought)
    assert compile_rule({"field": "tier", "op": "exists", "value": False}).matches(never_bought)
    lapsed = {"not": {"field": "days_since_last_purchase", "op": "<=", "value": 90}}
    assert compile_rule(lapsed).matches(never_bought)


def test_any_between_and_text_ops() -> None:
    rule = {"any": [{"field": "home_store", "op": "==", "value": "s2"},
                    {"field": "mean_basket_spend", "op": "between", "value": [50, 100]}]}
    seg = compile_rule(rule)
    assert seg.matches(facts(home_store="s2"))
    assert seg.matches(facts(baskets=10, total_spend=800.0))  # mean 80
    assert not seg.matches(facts(baskets=4, total_spend=800.0))  # mean 200, home s1


def test_normalised_rule_is_stable_and_recompiles_to_the_same_segment() -> None:
    seg = compile_rule({"field": "tier", "op": "in", "value": ["gold", "silver", "gold"]})
    assert seg.rule == {"field": "tier", "op": "in", "value": ["gold", "silver"]}
    assert compile_rule(seg.rule).rule == seg.rule


@pytest.mark.parametrize(("doc", "path", "words"), [
    ([], "rule", "expected an object"),
    ({}, "rule", "expected one of"),
    ({"all": []}, "rule.all", "non-empty list"),
    ({"all": [{"field": "nope", "op": "==", "value": 1}]}, "rule.all[0].field", "unknown field"),
    ({"field": "tier", "op": ">=", "value": "gold"}, "rule.op", "not allowed"),
    ({"field": "total_spend", "op": ">=", "value": "500"}, "rule.value", "finite number"),
    ({"field": "total_spend", "op": ">=", "value": True}, "rule.value", "finite number"),
    ({"field": "total_spend", "op": ">="}, "rule.value", "missing value"),
    ({"field": "total_spend", "op": "between", "value": [5, 1]}, "rule.value", "low <= high"),
    ({"field": "tier", "op": "in", "value": "gold"}, "rule.value", "list of strings"),
    ({"field": "tier", "op": "exists", "value": 1}, "rule.value", "true or false"),
    ({"not": {"any": [{"field": "tier", "op": "==", "value": 3}]}}, "rule.not.any[0].value",
     "string"),
    ({"not": {"field": "tier", "op": "exists", "value": True}, "x": 1}, "rule", "beside 'not'"),
    ({"all": [{"field": "tier", "op": "exists", "value": True}], "any": []}, "rule",
     "beside 'all'"),
    ({"field": "tier", "op": "exists", "value": True, "extra": 1}, "rule", "unexpected key"),
])
def test_bad_rules_are_refused_with_the_path(doc: Any, path: str, words: str) -> None:
    with pytest.raises(SegmentRuleError) as err:
        compile_rule(doc)
    assert err.value.path == path
    assert words in err.value.message
    assert err.value.detail()["reason"] == "bad_rule"


def test_size_and_depth_limits() -> None:
    leaf = {"field": "tier", "op": "exists", "value": True}
    deep: Any = leaf
    for _ in range(10):
        deep = {"not": deep}
    with pytest.raises(SegmentRuleError, match="deeper"):
        compile_rule(deep)
    with pytest.raises(SegmentRuleError, match="too large"):
        compile_rule({"any": [leaf] * 300})


# ------------------------------------------------------------------ properties

LEAVES = st.one_of(
    st.builds(lambda f, op, v: {"field": f, "op": op, "value": v},
              st.sampled_from([f for f, k in FIELDS.items() if k == NUMBER]),
              st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              st.integers(-5, 1000)),
    st.builds(lambda op, v: {"field": "tier", "op": op, "value": v},
              st.sampled_from(["in", "not_in"]),
              st.lists(st.sampled_from(["gold", "silver", "basic"]), max_size=3)),
    st.builds(lambda f, v: {"field": f, "op": "exists", "value": v},
              st.sampled_from(sorted(FIELDS)), st.booleans()),
)
RULES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=8,
)
FACTS = st.builds(
    lambda b, s, d, t, h: member_facts(
        baskets=b, total_spend=s, last_purchase_ts=None if d is None else NOW - d * DAY_S,
        tier=t, home_store=h, now=NOW),
    st.integers(0, 50),
    st.floats(0, 5000, allow_nan=False),
    st.one_of(st.none(), st.floats(0, 400, allow_nan=False)),
    st.one_of(st.none(), st.sampled_from(["gold", "silver", "basic"])),
    st.one_of(st.none(), st.sampled_from(["s1", "s2"])),
)


@settings(max_examples=300, deadline=None)
@given(RULES, RULES, FACTS)
def test_combinators_follow_boolean_algebra(a: Any, b: Any, member: dict[str, Any]) -> None:
    x, y = compile_rule(a).matches(member), compile_rule(b).matches(member)
    assert compile_rule({"all": [a, b]}).matches(member) == (x and y)
    assert compile_rule({"any": [a, b]}).matches(member) == (x or y)
    assert compile_rule({"not": a}).matches(member) == (not x)
    # De Morgan
    assert compile_rule({"not": {"all": [a, b]}}).matches(member) == \
        compile_rule({"any": [{"not": a}, {"not": b}]}).matches(member)


@settings(max_examples=200, deadline=None)
@given(RULES, FACTS)
def test_normalised_rule_evaluates_like_the_original(rule: Any, member: dict[str, Any]) -> None:
    seg = compile_rule(rule)
    assert compile_rule(seg.rule).matches(member) == seg.matches(member)


@settings(max_examples=200, deadline=None)
@given(RULES, st.dictionaries(st.sampled_from(sorted(FIELDS)),
                              st.one_of(st.none(), st.booleans(), st.text(max_size=3),
                                        st.floats(), st.lists(st.integers(), max_size=2))))
def test_evaluation_never_raises_on_odd_facts(rule: Any, odd: dict[str, Any]) -> None:
    assert compile_rule(rule).matches(odd) in (True, False)


def test_evaluation_speed_over_10k_members() -> None:
    members = [(f"m-{i:08x}", member_facts(
        baskets=i % 40, total_spend=float(i % 1500), last_purchase_ts=NOW - (i % 90) * DAY_S,
        tier=("gold", "silver", "basic")[i % 3], home_store=f"s{i % 7}", now=NOW))
        for i in range(10_000)]
    seg = compile_rule(GOLD_ACTIVE)
    start = time.perf_counter()
    subjects = evaluate(seg, members)
    elapsed = time.perf_counter() - start
    expected = [s for s, f in members if f["total_spend"] >= 500 and f["tier"] == "gold"
                and f["days_since_last_purchase"] <= 30]
    assert subjects == expected and subjects
    assert elapsed < 0.5, elapsed
