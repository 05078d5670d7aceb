"""Catalog-wide item statistics, built once from transactions and shared by every request.

Everything here is computed from rows strictly before ``as_of`` so that a training example
for a visit at time t can use a snapshot built "as of" t and see exactly what the edge
would have seen. Pure numpy + stdlib: the hub builds it, the edge loads it, no I/O here.

Statistics are per item index (``ItemStats.index``); every per-item array has one extra
zero slot at the end (index ``n_items``) so unknown products gather zeros without branching.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.item_graphs import Neighbours, cap_per_group, similarity_graph
from models.transactions import Transaction

DAY = 86_400.0
RECENT_WINDOWS_DAYS = (7, 30)
DAYPARTS = 4  # night 0-6, morning 6-12, afternoon 12-18, evening 18-24 (store local time)
NEIGHBOURS_PER_ITEM = 40
MAX_BASKET_FOR_PAIRS = 40  # huge baskets (stock-ups) say little about co-purchase
LOOKUP_CACHE_MIN = 64  # lists this long are candidate lists, worth remembering
LOOKUP_CACHE_SIZE = 8  # e.g. one in-stock list per store zone
MAX_USER_ITEMS_FOR_PAIRS = 30  # most recent distinct items per customer for the user-level graph
_tokens = itertools.count(1)


def daypart_of(local_seconds: np.ndarray | float) -> np.ndarray:
    """Day part index (0..3) of local epoch seconds."""
    hours = np.floor(np.mod(np.asarray(local_seconds, dtype=np.float64), DAY) / 3600.0)
    return (hours // 6).astype(np.int64)


def weekday_of(local_seconds: np.ndarray | float) -> np.ndarray:
    """Monday=0 .. Sunday=6 of local epoch seconds (1970-01-01 was a Thursday)."""
    days = np.floor(np.asarray(local_seconds, dtype=np.float64) / DAY).astype(np.int64)
    return (days + 3) % 7


@dataclass(slots=True)
class TxArrays:
    """Transactions as flat integer-coded arrays: converted once, sliced by time many times."""

    product_ids: list[str]
    customers: list[str]
    categories: list[str]
    stores: list[str]
    item: np.ndarray  # int64 per row
    customer: np.ndarray
    basket: np.ndarray  # global basket code (customer, basket_id)
    ts: np.ndarray  # float64 epoch seconds
    price: np.ndarray  # float64 unit price, nan when unknown
    category: np.ndarray  # int64, -1 when unknown
    store: np.ndarray  # int64, -1 when unknown
    index: dict[str, int] = field(default_factory=dict)  # product id -> item code

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {p: i for i, p in enumerate(self.product_ids)}

    @classmethod
    def from_transactions(cls, rows: Iterable[Transaction]) -> TxArrays:
        codes: dict[str, dict[str, int]] = {k: {} for k in ("p", "c", "b", "g", "s")}
        cols: dict[str, list[float]] = {k: [] for k in ("p", "c", "b", "t", "x", "g", "s")}

        def code(kind: str, key: str | None) -> int:
            if key is None:
                return -1
            table = codes[kind]
            found = table.get(key)
            if found is None:
                found = table[key] = len(table)
            return found

        for t in rows:
            cols["p"].append(code("p", t.product_id))
            cols["c"].append(code("c", t.customer_id))
            cols["b"].append(code("b", f"{t.customer_id}\x1f{t.basket_id}"))
            cols["t"].append(t.timestamp)
            cols["x"].append(np.nan if t.price is None else t.price)
            cols["g"].append(code("g", t.category))
            cols["s"].append(code("s", t.store_id))
        # product codes in id order, whatever the row order: ties (equal counts or
        # similarities) then break the same way in every build, so snapshots and a
        # serving-time build agree exactly
        products = sorted(codes["p"])
        rank = np.empty(len(products), dtype=np.int64)
        rank[[codes["p"][p] for p in products]] = np.arange(len(products))
        return cls(
            product_ids=products,
            customers=list(codes["c"]),
            categories=list(codes["g"]),
            stores=list(codes["s"]),
            item=rank[np.asarray(cols["p"], dtype=np.int64)],
            customer=np.asarray(cols["c"], dtype=np.int64),
            basket=np.asarray(cols["b"], dtype=np.int64),
            ts=np.asarray(cols["t"], dtype=np.float64),
            price=np.asarray(cols["x"], dtype=np.float64),
            category=np.asarray(cols["g"], dtype=np.int64),
            store=np.asarray(cols["s"], dtype=np.int64),
        )


def _group_median(key: np.ndarray, value: np.ndarray, size: int) -> np.ndarray:
    """Median of ``value`` per integer ``key`` (nan where a key has no value)."""
    out = np.full(size, np.nan)
    if len(key) == 0:
        return out
    order = np.lexsort((value, key))
    key, value = key[order], value[order]
    counts = np.bincount(key, minlength=size)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = (value[lo] + value[hi]) / 2.0
    return out


def _pad(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Append the zero slot for unknown products; float32 for compact gathers."""
    return np.r_[np.nan_to_num(values.astype(np.float64), nan=fill), fill].astype(np.float32)


def _sorted_store_counts(store: np.ndarray, item: np.ndarray, n_stores: int, n_items: int):
    keys = store * (n_items + 1) + item
    uniq, counts = np.unique(keys, return_counts=True)
    indptr = np.zeros(n_stores + 1, dtype=np.int64)
    np.cumsum(np.bincount(uniq // (n_items + 1), minlength=n_stores), out=indptr[1:])
    return indptr, uniq % (n_items + 1), counts.astype(np.float32)


class ItemStats:
    """Popularity, trends, co-purchase graphs, prices and cycles of every product sold.

    Build with ``ItemStats.build(rows, as_of)``; training snapshots many cutoffs from one
    ``TxArrays`` with ``ItemStats.from_arrays`` (same code path, so identical numbers).
    """

    def __init__(self) -> None:
        self.token = next(_tokens)  # lets histories cache their resolved item indices
        self.as_of: float | None = None
        self.reference = 0.0  # the "now" recent windows end at
        self.utc_offset_s = 0
        self.product_ids: list[str] = []
        self.index: dict[str, int] = {}
        self.n_items = 0
        self.n_baskets = 0
        self.n_customers = 0
        self.first_ts = 0.0
        self.last_ts = 0.0
        self.arrays: dict[str, np.ndarray] = {}
        self.item_matrix = np.zeros((1, len(ITEM_COLUMNS)), dtype=np.float32)
        self.recent_baskets: dict[int, float] = {}
        self.category_names: list[str] = []
        self.category_index: dict[str, int] = {}
        self.store_index: dict[str, int] = {}
        self.store_baskets = np.zeros(0, dtype=np.float32)
        self.store_indptr = np.zeros(1, dtype=np.int64)
        self.store_items = np.zeros(0, dtype=np.int64)
        self.store_counts = np.zeros(0, dtype=np.float32)
        self.store_top: list[np.ndarray] = []  # per store code: best-selling item indices
        self._store_share: dict[int, np.ndarray] = {}
        self._lookup_cache: dict[tuple[int, str, str], tuple[list[str], np.ndarray]] = {}
        self.has_time_of_day = False
        self.visit_interval_days = 7.0
        self.copurchase = Neighbours.empty(0)
        self.alike = self.copurchase
        self.popular_recent = np.zeros(0, dtype=np.int64)
        self.popular_global = np.zeros(0, dtype=np.int64)
        self.popular_rank: dict[int, int] = {}

    @classmethod
    def build(
        cls, transactions: Iterable[Transaction], as_of: float | None = None,
        *, utc_offset_s: int = 0,
    ) -> ItemStats:
        """Statistics from rows with ``timestamp < as_of`` (all rows when ``as_of`` is None)."""
        return cls.from_arrays(TxArrays.from_transactions(transactions), as_of,
                               utc_offset_s=utc_offset_s)

    def get(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def _set_item_matrix(self, columns: dict[str, np.ndarray]) -> None:
        """One row per item with every item column: a visit gathers 1-2 cache lines per
        candidate instead of one per column (features are memory-latency bound)."""
        self.item_matrix = np.ascontiguousarray(
            np.stack([columns[k] for k in ITEM_COLUMNS], axis=1), dtype=np.float32)
        self.arrays = {k: self.item_matrix[:, j] for j, k in enumerate(ITEM_COLUMNS)}
        self.arrays["category"] = self.item_matrix[:, ITEM_COLUMNS.index("category")].astype(
            np.int64)

    def lookup_candidates(self, product_ids: Sequence[str]) -> np.ndarray:
        """``lookup`` for candidate lists, remembering the last few lists.

        The edge scores the same in-stock list (per zone) for every visit until stock
        changes; recognising it (same strings, so the comparison is mostly identity
        checks) saves ~0.25 ms of dictionary lookups per 1,000 candidates. Read-only result.
        """
        if len(product_ids) < LOOKUP_CACHE_MIN:
            return self.lookup(product_ids)
        key = (len(product_ids), product_ids[0], product_ids[-1])
        found = self._lookup_cache.get(key)
        if found is not None and found[0] == list(product_ids):
            return found[1]
        index = self.lookup(product_ids)
        index.setflags(write=False)
        if len(self._lookup_cache) >= LOOKUP_CACHE_SIZE:
            self._lookup_cache.pop(next(iter(self._lookup_cache)))
        self._lookup_cache[key] = (list(product_ids), index)
        return index

    def lookup(self, product_ids: Sequence[str]) -> np.ndarray:
        """Item indices; unknown products map to the zero slot ``n_items``."""
        get, n = self.index.get, self.n_items  # a list comprehension measured 5x faster
        return np.array([get(p, n) for p in product_ids], dtype=np.int64)  # than np.fromiter

    def store_popularity(self, store_id: str | None, items: np.ndarray) -> np.ndarray:
        """Share of the store's baskets containing each item (0 for unknown store/item)."""
        code = self.store_index.get(store_id) if store_id is not None else None
        if code is None or self.store_baskets[code] <= 0:
            return np.zeros(len(items), dtype=np.float32)
        dense = self._store_share.get(code)
        if dense is None:  # built on first use: a store device only ever asks for its own
            lo, hi = self.store_indptr[code], self.store_indptr[code + 1]
            dense = np.zeros(self.n_items + 1, dtype=np.float32)
            dense[self.store_items[lo:hi]] = self.store_counts[lo:hi] / self.store_baskets[code]
            self._store_share[code] = dense
        return dense[items]

    @classmethod
    def from_arrays(
        cls, tx: TxArrays, as_of: float | None = None, *, utc_offset_s: int = 0,
        graphs_from: ItemStats | None = None,
    ) -> ItemStats:
        """Snapshot of ``tx`` before ``as_of``.

        ``graphs_from`` reuses the (expensive) co-purchase graphs of an earlier snapshot of
        the same ``tx``: still leak-free, since they only saw rows before its own as_of.
        """
        self = cls()
        mask = tx.ts < as_of if as_of is not None else np.ones(len(tx.ts), dtype=bool)
        # the index covers every product of ``tx``; ones not sold before as_of get zero
        # statistics, exactly what an unknown product gets, so snapshots share one index
        item = tx.item[mask]
        n = len(tx.product_ids)
        customer, basket, ts = tx.customer[mask], tx.basket[mask], tx.ts[mask]
        self.as_of = as_of
        self.utc_offset_s = utc_offset_s
        self.product_ids = tx.product_ids
        self.index = tx.index
        self.n_items = n
        self.reference = as_of if as_of is not None else (float(ts.max()) + 1.0 if n else 0.0)
        if len(item) == 0:
            empty = {k: np.zeros(n + 1, np.float32) for k in ITEM_COLUMNS}
            empty["category"] = np.full(n + 1, -1.0, dtype=np.float32)
            self._set_item_matrix(empty)
            self.copurchase = self.alike = Neighbours.empty(n)
            self.recent_baskets = {w: 0.0 for w in RECENT_WINDOWS_DAYS}
            return self
        self.first_ts, self.last_ts = float(ts.min()), float(ts.max())

        # one row per (basket, item): quantities and duplicate lines don't count twice
        _, first_row = np.unique(basket * n + item, return_index=True)
        b_item, b_basket, b_ts = item[first_row], basket[first_row], ts[first_row]
        b_cust, b_store = customer[first_row], tx.store[mask][first_row]
        basket_codes, basket_first = np.unique(b_basket, return_index=True)
        self.n_baskets = len(basket_codes)
        self.n_customers = len(np.unique(b_cust))
        count = np.bincount(b_item, minlength=n).astype(np.float64)

        # customers and repeat behaviour per item
        ci_key = b_cust * n + b_item
        ci_uniq, ci_inv = np.unique(ci_key, return_inverse=True)
        ci_count = np.bincount(ci_inv)
        ci_item = ci_uniq % n
        buyers = np.bincount(ci_item, minlength=n).astype(np.float64)
        repeaters = np.bincount(ci_item, weights=(ci_count >= 2), minlength=n)
        order = np.lexsort((b_ts, b_item, b_cust))
        same = (b_cust[order][1:] == b_cust[order][:-1]) & (b_item[order][1:] == b_item[order][:-1])
        gaps = np.diff(b_ts[order])[same] / DAY
        gap_item = b_item[order][1:][same]
        n_gaps = np.bincount(gap_item, minlength=n)
        log_gap = np.bincount(gap_item, weights=np.log1p(gaps), minlength=n)
        interval = np.where(n_gaps > 0, np.expm1(log_gap / np.maximum(n_gaps, 1)), np.nan)

        # customer visit rhythm (a default for customers with one visit)
        v_order = np.lexsort((b_ts[basket_first], b_cust[basket_first]))
        v_cust, v_ts = b_cust[basket_first][v_order], b_ts[basket_first][v_order]
        v_same = v_cust[1:] == v_cust[:-1]
        v_gaps = np.diff(v_ts)[v_same] / DAY
        self.visit_interval_days = float(np.median(v_gaps)) if len(v_gaps) else 7.0

        price_ok = ~np.isnan(tx.price[mask])
        price = _group_median(item[price_ok], tx.price[mask][price_ok], n)
        cat_rows = tx.category[mask]
        cat_used = np.unique(cat_rows[cat_rows >= 0])
        cat_remap = np.full(len(tx.categories) + 1, -1, dtype=np.int64)
        cat_remap[cat_used] = np.arange(len(cat_used))
        self.category_names = [tx.categories[i] for i in cat_used]
        self.category_index = {name: i for i, name in enumerate(self.category_names)}
        category = np.full(n, -1, dtype=np.int64)
        category[item] = cat_remap[cat_rows]  # last write wins: any row's category
        has_cat = cat_rows >= 0
        category[item[has_cat]] = cat_remap[cat_rows[has_cat]]
        first_seen = np.full(n, np.inf)
        np.minimum.at(first_seen, b_item, b_ts)

        arrays = {
            "count": _pad(count),
            "share": _pad(count / self.n_baskets),
            "buyers": _pad(buyers),
            "repeat_share": _pad(repeaters / np.maximum(buyers, 1.0)),
            "interval_days": _pad(interval),
            "price": _pad(price),
            "age_days": _pad(np.where(count > 0, (self.reference - first_seen) / DAY, 0.0)),
        }
        for w in RECENT_WINDOWS_DAYS:
            recent = b_ts >= self.reference - w * DAY
            arrays[f"recent_{w}"] = _pad(np.bincount(b_item[recent], minlength=n))
            self.recent_baskets[w] = float(len(np.unique(b_basket[recent])))
        local = b_ts + utc_offset_s
        self.has_time_of_day = bool(np.any(np.mod(local, DAY) != 0))
        wd = weekday_of(local)
        for d in range(7):
            arrays[f"weekday_{d}"] = _pad(np.bincount(b_item[wd == d], minlength=n))
        dp = daypart_of(local)
        for d in range(DAYPARTS):
            arrays[f"daypart_{d}"] = _pad(np.bincount(b_item[dp == d], minlength=n))
        arrays["category"] = np.r_[category, -1].astype(np.float32)
        self._set_item_matrix(arrays)

        store_codes = np.unique(b_store[b_store >= 0])
        self.store_index = {tx.stores[s]: i for i, s in enumerate(store_codes)}
        s_remap = np.full(len(tx.stores) + 1, -1, dtype=np.int64)
        s_remap[store_codes] = np.arange(len(store_codes))
        s_rows = b_store >= 0
        s_code = s_remap[b_store[s_rows]]
        self.store_indptr, self.store_items, self.store_counts = _sorted_store_counts(
            s_code, b_item[s_rows], len(store_codes), n)
        self.store_top = []
        for k in range(len(store_codes)):
            lo, hi = self.store_indptr[k], self.store_indptr[k + 1]
            best = np.argsort(-self.store_counts[lo:hi], kind="stable")[:300]
            self.store_top.append(self.store_items[lo:hi][best])
        bs = b_store[basket_first]
        self.store_baskets = np.bincount(s_remap[bs[bs >= 0]], minlength=len(store_codes)).astype(
            np.float32)

        if graphs_from is not None and graphs_from.product_ids is tx.product_ids:
            self.copurchase, self.alike = graphs_from.copurchase, graphs_from.alike
        else:
            self._build_graphs(b_basket, b_item, ci_uniq, ci_inv, ci_item, b_ts, basket_codes)
        recent_score = (self.arrays["recent_7"][:n] * 4.0 + self.arrays["recent_30"][:n]
                        + count * 1e-3)
        ranked = np.argsort(-recent_score, kind="stable")[:1000]
        self.popular_recent = ranked[recent_score[ranked] > 0]
        self.popular_rank = {int(i): r for r, i in enumerate(self.popular_recent[:100])}
        ranked = np.argsort(-count, kind="stable")[:1000]
        self.popular_global = ranked[count[ranked] > 0]
        return self

    def _build_graphs(
        self, b_basket: np.ndarray, b_item: np.ndarray, ci_uniq: np.ndarray,
        ci_inv: np.ndarray, ci_item: np.ndarray, b_ts: np.ndarray, basket_codes: np.ndarray,
    ) -> None:
        n = self.n_items
        sizes = np.bincount(np.searchsorted(basket_codes, b_basket))
        small = sizes[np.searchsorted(basket_codes, b_basket)] <= MAX_BASKET_FOR_PAIRS
        self.copurchase = similarity_graph(b_basket[small], b_item[small], n, NEIGHBOURS_PER_ITEM)
        last_buy = np.full(len(ci_uniq), -np.inf)
        np.maximum.at(last_buy, ci_inv, b_ts)
        keep = cap_per_group(ci_uniq // n, last_buy, MAX_USER_ITEMS_FOR_PAIRS)
        self.alike = similarity_graph((ci_uniq // n)[keep], ci_item[keep], n, NEIGHBOURS_PER_ITEM)


ITEM_COLUMNS = ("count", "share", "buyers", "repeat_share", "interval_days", "price",
                "age_days", *(f"recent_{w}" for w in RECENT_WINDOWS_DAYS),
                *(f"weekday_{d}" for d in range(7)), *(f"daypart_{d}" for d in range(DAYPARTS)),
                "category")
