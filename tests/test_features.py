"""Features: train/serve parity, unknown products, empty histories, time cut-offs, speed."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest

from models.examples import Snapshots, day_start, featurise, last_basket_queries
from models.features import (
    FEATURE_NAMES,
    Context,
    CustomerHistory,
    ItemStats,
    build_features,
    explain,
    generate_candidates,
)
from models.item_stats import DAY, TxArrays
from models.reasons import REASON_KINDS
from models.synthetic import synthetic_transactions
from models.transactions import Transaction
from tests.synthetic_env import synthetic_fixtures

PERSONAL = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(("p_", "cust_"))]
ITEM = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("item_")]


rows, stats = synthetic_fixtures(customers=50, products=80, days=50, seed=3)


def customer_rows(rows: list[Transaction]) -> dict[str, list[Transaction]]:
    out: dict[str, list[Transaction]] = defaultdict(list)
    for r in rows:
        out[r.customer_id].append(r)
    return out


def test_feature_names_are_unique_and_shape_is_right(rows, stats) -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    own = customer_rows(rows)["c00001"]
    history = CustomerHistory.from_transactions(own)
    ctx = Context(timestamp=stats.last_ts + DAY, store_id="S0")
    cands = generate_candidates(history, stats, ctx, limit=50)
    x = build_features(history, cands, stats, ctx)
    assert x.shape == (len(cands), len(FEATURE_NAMES)) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert len(set(cands)) == len(cands) <= 50
    assert build_features(history, [], stats, ctx).shape == (0, len(FEATURE_NAMES))


def test_empty_history_has_only_non_personal_features(stats) -> None:
    ctx = Context(timestamp=stats.last_ts + DAY)
    cands = generate_candidates(CustomerHistory.empty(), stats, ctx, limit=30)
    assert len(cands) == 30  # popular items for an anonymous visitor
    x = build_features(CustomerHistory.from_transactions([]), cands, stats, ctx)
    assert np.all(x[:, PERSONAL] == 0)
    assert np.all(x[:, FEATURE_NAMES.index("item_log_count")] > 0)
    reasons = explain(CustomerHistory.empty(), cands[0], stats, ctx)
    assert all(not r.personal for r in reasons)


def test_unknown_products_get_zero_item_statistics(rows, stats) -> None:
    history = CustomerHistory.from_transactions(customer_rows(rows)["c00002"])
    ctx = Context(timestamp=stats.last_ts + DAY, store_id="S1")
    known = history.items[0]
    x = build_features(history, ["never-sold-1", known, "never-sold-2"], stats, ctx)
    assert np.all(x[[0, 2]][:, ITEM] == 0)
    assert np.any(x[1, ITEM] != 0)
    assert np.all(x[0, PERSONAL] == x[2, PERSONAL])  # no personal signal either, but same visit
    assert x[0, FEATURE_NAMES.index("p_count")] == 0
    assert x[1, FEATURE_NAMES.index("p_count")] >= 1
    assert explain(history, "never-sold-1", stats, ctx) == []
    # a brand-new product in today's POS basket is personal history even unknown to stats
    new = Transaction("c00002", "pos-1", stats.last_ts + 3600, "brand-new", 1.0, 2.5, None, "S1")
    fresh = history.with_basket([new])
    y = build_features(fresh, ["brand-new"], stats, ctx)
    assert y[0, FEATURE_NAMES.index("p_count")] == 1
    assert "brand-new" in generate_candidates(fresh, stats, ctx, limit=200)


def test_empty_stats_work(rows) -> None:
    empty = ItemStats.build([])
    history = CustomerHistory.from_transactions(customer_rows(rows)["c00003"])
    ctx = Context(timestamp=1e9)
    x = build_features(history, ["a", "b"], empty, ctx)
    assert x.shape == (2, len(FEATURE_NAMES)) and np.all(np.isfinite(x))
    assert generate_candidates(CustomerHistory.empty(), empty, ctx) == []


def test_stats_only_see_rows_before_as_of(rows) -> None:
    cut = day_start(rows[0].timestamp) + 30 * DAY
    before = [r for r in rows if r.timestamp < cut]
    late = [r for r in rows if r.timestamp >= cut]
    a = ItemStats.build(before, as_of=cut)
    b = ItemStats.build(rows, as_of=cut)
    c = ItemStats.build([*late, *before, *late], as_of=cut)  # order and extra rows irrelevant
    history = CustomerHistory.from_transactions(customer_rows(before)["c00004"])
    ctx = Context(timestamp=cut + 10 * 3600, store_id="S0")
    products = sorted({r.product_id for r in rows})
    xa, xb, xc = (build_features(history, products, s, ctx) for s in (a, b, c))
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(xa, xc)
    only_late = {r.product_id for r in late} - {r.product_id for r in before}
    for pid in only_late:
        assert pid not in generate_candidates(CustomerHistory.empty(), b, ctx, limit=1000)


def test_training_rows_equal_serving_rows(rows) -> None:
    """The rows a model is trained on are exactly what build_features gives at serve time."""
    queries = last_basket_queries(rows, min_history_baskets=2)[:12]
    assert queries
    examples = featurise(queries, Snapshots(TxArrays.from_transactions(rows),
                                            graph_refresh_days=0), limit=40)
    own = customer_rows(rows)
    position = {key: i for i, key in enumerate(examples.keys)}
    assert sorted(position) == sorted(q.key for q in queries)
    for query in queries:
        i = position[query.key]
        t = query.context.timestamp
        serving_stats = ItemStats.build(rows, as_of=day_start(t))
        customer = query.key.split("#")[0]
        serving_history = CustomerHistory.from_transactions(
            [r for r in own[customer] if r.timestamp < t])
        cands = generate_candidates(serving_history, serving_stats, query.context, limit=40)
        assert cands == examples.candidates[i]
        served = build_features(serving_history, cands, serving_stats, query.context)
        trained = examples.X[examples.offsets[i]:examples.offsets[i + 1]]
        np.testing.assert_array_equal(trained, served)
        assert examples.y is not None
        labels = examples.y[examples.offsets[i]:examples.offsets[i + 1]]
        assert list(labels) == [float(c in query.target) for c in cands]


def test_with_basket_equals_rebuilding(rows, stats) -> None:
    own = sorted(customer_rows(rows)["c00005"], key=lambda r: r.timestamp)
    last = own[-1].basket_id
    head = [r for r in own if r.basket_id != last]
    tail = [r for r in own if r.basket_id == last]
    ctx = Context(timestamp=own[-1].timestamp + DAY)
    grown = CustomerHistory.from_transactions(head).with_basket(tail)
    whole = CustomerHistory.from_transactions(own)
    products = sorted(stats.index)
    np.testing.assert_array_equal(build_features(grown, products, stats, ctx),
                                  build_features(whole, products, stats, ctx))
    with pytest.raises(ValueError):
        CustomerHistory.from_transactions([*own, *customer_rows(rows)["c00006"]])


def test_personal_features_mean_what_they_say(stats) -> None:
    t0 = stats.first_ts
    mine = [Transaction("me", f"b{i}", t0 + i * 7 * DAY, "p00001", 1.0, 3.0, None, None)
            for i in range(4)]
    history = CustomerHistory.from_transactions(mine)
    ctx = Context(timestamp=t0 + 31 * DAY)
    x = build_features(history, ["p00001", "p00002"], stats, ctx)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert x[0, col["p_count"]] == 4 and x[1, col["p_count"]] == 0
    assert x[0, col["p_days_since"]] == pytest.approx(10.0)
    assert x[0, col["p_cycle_personal"]] == pytest.approx(10.0 / 7.0, rel=1e-5)
    assert x[0, col["p_in_last_basket"]] == 1
    assert x[0, col["cust_days_since_visit"]] == pytest.approx(10.0)
    texts = [r.text for r in explain(history, "p00001", stats, ctx)]
    assert texts[0] == "bought 4 times, last 10 days ago"
    assert "usually bought every ~7 days, last 10 days ago" in texts


def test_explain_reasons_are_known_kinds_and_fast(rows, stats) -> None:
    history = CustomerHistory.from_transactions(customer_rows(rows)["c00007"])
    ctx = Context(timestamp=stats.last_ts + 3600, store_id="S0")
    cands = generate_candidates(history, stats, ctx, limit=40)
    start = time.perf_counter()
    for pid in cands:
        for reason in explain(history, pid, stats, ctx, max_reasons=3):
            assert reason.kind in REASON_KINDS and reason.text
    assert (time.perf_counter() - start) / len(cands) < 500e-6  # budget 50 µs, slack for CI


def test_features_for_1000_candidates_are_fast() -> None:
    big = list(synthetic_transactions(customers=300, products=3000, days=60, seed=1))
    stats = ItemStats.build(big)
    own = [r for r in big if r.customer_id == "c00010"]
    history = CustomerHistory.from_transactions(own)
    ctx = Context(timestamp=stats.last_ts + DAY, store_id="S0")
    cands = stats.product_ids[:1000]
    build_features(history, cands, stats, ctx)
    times = []
    for _ in range(30):
        start = time.perf_counter()
        build_features(history, cands, stats, ctx)
        times.append(time.perf_counter() - start)
    assert float(np.median(times)) < 3e-3  # ~0.3 ms measured; generous for a busy CI box


def test_candidate_lookup_cache_is_exact(stats) -> None:
    ids = list(stats.product_ids[:100])
    first = stats.lookup_candidates(ids)
    assert list(first) == list(stats.lookup(ids))
    again = stats.lookup_candidates(list(ids))  # the service builds a new list per visit
    assert again is first and not again.flags.writeable
    swapped = [ids[0], *reversed(ids[1:-1]), ids[-1]]  # same length, first and last id
    assert list(stats.lookup_candidates(swapped)) == list(stats.lookup(swapped))
    with_unknown = [ids[0], *ids[1:-1][:50], "never-sold", *ids[52:-1], ids[-1]]
    assert stats.lookup_candidates(with_unknown)[51] == stats.n_items
