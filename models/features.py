"""Ranking features: ONE implementation used by training, offline evaluation and the edge.

A feature row describes (customer history, candidate product, visit context) using only
statistics from before the visit (``ItemStats`` snapshot) so training rows and serving rows
mean the same thing. Nothing here knows a dataset: ids are opaque strings, every scale is
relative (shares, ratios, days). Pure: numpy + stdlib, no I/O.

Personal features are exactly zero for an empty history (anonymous visitor or no
personalization consent), so the same model serves both cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from models.candidates import generate_candidates
from models.customer_history import CustomerHistory, ResolvedHistory, resolve
from models.explain import explain
from models.item_stats import DAY, ITEM_COLUMNS, RECENT_WINDOWS_DAYS, ItemStats, daypart_of

__all__ = [
    "FEATURE_DTYPE",
    "FEATURE_NAMES",
    "Context",
    "CustomerHistory",
    "ItemFeatures",
    "ItemStats",
    "build_features",
    "explain",
    "generate_candidates",
    "resolve",
]

FEATURE_NAMES: tuple[str, ...] = (
    # item, catalog-wide (non-personal)
    "item_log_count",
    "item_share",
    "item_recent7_share",
    "item_recent30_share",
    "item_trend7",
    "item_trend30",
    "item_store_share",
    "item_log_buyers",
    "item_repeat_share",
    "item_interval_days",
    "item_age_days",
    "item_log_price",
    "item_weekday_lift",
    "item_daypart_lift",
    # visit context
    "ctx_hour",
    "ctx_weekday",
    "ctx_day_of_year",
    # customer (personal, same for every candidate of a visit)
    "cust_log_baskets",
    "cust_days_since_visit",
    "cust_visit_interval",
    "cust_basket_size",
    "cust_repeat_ratio",
    "cust_log_distinct_items",
    # customer x item (personal)
    "p_count",
    "p_share",
    "p_decay_slow",
    "p_decay_fast",
    "p_in_last_basket",
    "p_days_since",
    "p_cycle_item",
    "p_cycle_personal",
    "p_cycle_visit",
    "p_copurchase_recent",
    "p_copurchase_all",
    "p_alike",
    "p_category_share",
    "p_category_decay",
    "p_price_ratio",
    "p_price_vs_basket",
)
FEATURE_DTYPE = np.float32
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_ITEM = {name: i for i, name in enumerate(ITEM_COLUMNS)}


@dataclass(frozen=True, slots=True)
class Context:
    """The moment of the visit (what is known before anything is bought)."""

    timestamp: float  # epoch seconds UTC
    store_id: str | None = None
    utc_offset_s: int = 0  # store local time = timestamp + offset (hour/weekday)

    @property
    def local(self) -> float:
        return self.timestamp + self.utc_offset_s


def history_positions(
    history: CustomerHistory, resolved: ResolvedHistory, idx: np.ndarray,
    candidates: Sequence[str], n_items: int,
) -> np.ndarray:
    """Position of each candidate in the history (-1 when never bought)."""
    if not history.n_baskets:
        return np.full(len(idx), -1, dtype=np.int64)
    sorted_index = resolved.sorted_index
    slot = np.minimum(np.searchsorted(sorted_index, idx), len(sorted_index) - 1)
    found = (sorted_index[slot] == idx) & (idx < n_items)
    hpos = np.where(found, resolved.sorted_pos[slot], -1)
    for k in np.flatnonzero(idx >= n_items).tolist():  # products stats never saw: by id
        hpos[k] = history.item_pos.get(candidates[k], -1)
    return hpos


def _log_ratio(num: np.ndarray, den: float | np.ndarray) -> np.ndarray:
    return np.log(np.maximum(num, 1e-6) / np.maximum(den, 1e-6))


@dataclass(frozen=True, slots=True)
class ItemFeatures:
    """The non-personal part of ``build_features`` for one candidate list, stats snapshot
    and minute: item, store and context columns (personal rows zero) plus what the
    personal columns need. Why separate: it is the same for every visit in that minute, so
    the edge builds it once and adds only the customer's columns per check-in."""

    base: np.ndarray  # (len(FEATURE_NAMES), n_cand), personal rows zero; never mutated
    idx: np.ndarray
    item_interval: np.ndarray
    price: np.ndarray
    category: np.ndarray


def item_features(
    candidates: Sequence[str], stats: ItemStats, context: Context, store: str | None
) -> ItemFeatures:
    """Item, store and visit-context columns of ``candidates`` (``store``: the store the
    visit is in, ``context.store_id or history.main_store``)."""
    n_cand = len(candidates)
    # filled feature by feature, so column-major: each write is one contiguous run
    out = np.zeros((len(FEATURE_NAMES), n_cand), dtype=FEATURE_DTYPE)
    idx = stats.lookup_candidates(candidates)
    col = _COL
    # one row gather (1-2 cache lines per candidate), then columns made contiguous
    item = np.ascontiguousarray(stats.item_matrix[idx].T)
    count = item[_ITEM["count"]]
    n_b = max(stats.n_baskets, 1)
    out[col["item_log_count"]] = np.log1p(count)
    out[col["item_share"]] = item[_ITEM["share"]]
    base = (count + 1.0) / (n_b + 1.0)
    sold = count > 0  # never-sold and unknown products carry no item signal at all
    for w, name in zip(RECENT_WINDOWS_DAYS, ("7", "30"), strict=True):
        recent = item[_ITEM[f"recent_{w}"]]
        total = stats.recent_baskets.get(w, 0.0)
        out[col[f"item_recent{name}_share"]] = recent / max(total, 1.0)
        out[col[f"item_trend{name}"]] = np.where(
            sold, np.log((recent + 1.0) / (total + 1.0) / base), 0.0)
    out[col["item_store_share"]] = stats.store_popularity(store, idx)
    out[col["item_log_buyers"]] = np.log1p(item[_ITEM["buyers"]])
    out[col["item_repeat_share"]] = item[_ITEM["repeat_share"]]
    item_interval = item[_ITEM["interval_days"]]
    out[col["item_interval_days"]] = item_interval
    out[col["item_age_days"]] = item[_ITEM["age_days"]]
    price = item[_ITEM["price"]]
    out[col["item_log_price"]] = np.log1p(price)
    local = context.local
    weekday = int((np.floor(local / DAY) + 3) % 7)
    out[col["item_weekday_lift"]] = np.where(
        sold, (item[_ITEM[f"weekday_{weekday}"]] + 1.0) / (count / 7.0 + 1.0), 0.0)
    if stats.has_time_of_day:
        part = int(daypart_of(local))
        out[col["item_daypart_lift"]] = np.where(
            sold, (item[_ITEM[f"daypart_{part}"]] + 1.0) / (count / 4.0 + 1.0), 0.0)
    when = datetime.fromtimestamp(local, tz=UTC)
    out[col["ctx_hour"]] = when.hour + when.minute / 60.0
    out[col["ctx_weekday"]] = weekday
    out[col["ctx_day_of_year"]] = when.timetuple().tm_yday
    category = item[_ITEM["category"]].astype(np.int64)
    for shared in (out, idx, item_interval, price, category):
        shared.flags.writeable = False  # reused across visits: build_features copies
    return ItemFeatures(out, idx, item_interval, price, category)


def build_features(
    history: CustomerHistory, candidates: Sequence[str], stats: ItemStats, context: Context,
    items: ItemFeatures | None = None,
) -> np.ndarray:
    """Feature matrix (len(candidates), len(FEATURE_NAMES)), float32, in FEATURE_NAMES order.

    The result is a Fortran-ordered view (features are built column by column); callers
    that need C order (ONNX Runtime) get it from ``Bundle.score``. ``items``: the
    ``item_features`` of exactly these arguments, when the caller keeps them (copied here,
    never changed).
    """
    if not len(candidates):
        return np.zeros((len(FEATURE_NAMES), 0), dtype=FEATURE_DTYPE).T
    if items is None:
        items = item_features(candidates, stats, context, context.store_id or history.main_store)
    out = items.base.copy()
    if history.n_baskets:
        _personal(out, history, candidates, items.idx, stats, context, items.item_interval,
                  items.price, items.category)
    return out.T


def _personal(
    out: np.ndarray, history: CustomerHistory, candidates: Sequence[str], idx: np.ndarray,
    stats: ItemStats, context: Context, item_interval: np.ndarray, price: np.ndarray,
    category: np.ndarray,
) -> None:
    col = _COL
    resolved = resolve(history, stats)
    last_visit = float(history.basket_times[-1])
    out[col["cust_log_baskets"]] = np.log1p(history.n_baskets)
    out[col["cust_days_since_visit"]] = max(context.timestamp - last_visit, 0.0) / DAY
    out[col["cust_visit_interval"]] = history.visit_interval_days
    out[col["cust_basket_size"]] = history.mean_basket_size
    out[col["cust_repeat_ratio"]] = history.repeat_ratio
    out[col["cust_log_distinct_items"]] = np.log1p(len(history.items))

    hpos = history_positions(history, resolved, idx, candidates, stats.n_items)
    bought = np.flatnonzero(hpos >= 0)
    if len(bought):
        pos = hpos[bought]
        cnt = history.count[pos]
        out[col["p_count"], bought] = cnt
        out[col["p_share"], bought] = cnt / history.n_baskets
        out[col["p_decay_slow"], bought] = history.decay_slow[pos]
        out[col["p_decay_fast"], bought] = history.decay_fast[pos]
        out[col["p_in_last_basket"], bought] = history.in_last_basket[pos]
        since = np.maximum(context.timestamp - history.last_ts[pos], 0.0) / DAY
        out[col["p_days_since"], bought] = since
        interval = item_interval[bought]
        out[col["p_cycle_item"], bought] = np.where(interval > 0, since / np.maximum(
            interval, 1e-3), 0.0)
        personal = history.interval_days[pos]
        out[col["p_cycle_personal"], bought] = np.where(personal > 0, since / np.maximum(
            personal, 1e-3), 0.0)
        if history.visit_interval_days > 0:
            out[col["p_cycle_visit"], bought] = since / history.visit_interval_days
    if resolved.neighbours is not None:
        recent, overall, alike = resolved.neighbours
        out[col["p_copurchase_recent"]] = recent[idx]
        out[col["p_copurchase_all"]] = overall[idx]
        out[col["p_alike"]] = alike[idx]
    assert resolved.category_share is not None and resolved.category_decay is not None
    out[col["p_category_share"]] = resolved.category_share[category]
    out[col["p_category_decay"]] = resolved.category_decay[category]
    priced = price > 0
    if history.typical_item_price and history.typical_item_price > 0:
        out[col["p_price_ratio"]] = np.where(
            priced, _log_ratio(price, history.typical_item_price), 0.0)
    if history.typical_basket_value and history.typical_basket_value > 0:
        out[col["p_price_vs_basket"]] = np.where(
            priced, price / history.typical_basket_value, 0.0)
