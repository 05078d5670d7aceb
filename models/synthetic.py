"""Synthetic canonical transactions with the structure real baskets have.

Used by tests (fast, deterministic), ``scripts/bench_scoring`` when no real data is around,
and the 1.5 M-row timing runs. Shoppers have favourite products they rebuy on a rhythm,
products come in co-purchase clusters within categories, popularity is Zipf-like, and
visits have a time of day. Not a stand-in for real data in any accuracy claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from models.transactions import Transaction

START = 1_700_000_000.0  # 2023-11-14, any fixed epoch works
DAY = 86_400.0


def synthetic_transactions(
    *, customers: int = 60, products: int = 120, days: int = 60, stores: int = 2,
    seed: int = 0, visits_per_week: float = 1.5,
) -> Iterator[Transaction]:
    """Rows in time order per customer (overall order: by customer, then time)."""
    rng = np.random.default_rng(seed)
    n_cat = max(2, products // 10)
    category = rng.integers(0, n_cat, products)
    price = np.round(np.exp(rng.normal(1.5, 0.8, products)), 2)
    popularity = 1.0 / np.arange(1, products + 1) ** 0.9
    popularity = popularity[rng.permutation(products)]
    popularity /= popularity.sum()
    for c in range(customers):
        favourites = rng.choice(products, size=min(8, products), replace=False, p=popularity)
        liked_cats = set(category[favourites].tolist())
        store = f"S{rng.integers(0, stores)}"
        rate = visits_per_week / 7.0 * rng.uniform(0.5, 1.5)
        t = START + rng.uniform(0, 5) * DAY
        b = 0
        while t < START + days * DAY:
            hour = rng.choice([9, 12, 17, 19]) + rng.uniform(0, 2)
            when = math.floor(t / DAY) * DAY + hour * 3600.0
            size = 1 + rng.poisson(4)
            picks = set()
            for _ in range(size):
                r = rng.random()
                if r < 0.45:
                    picks.add(int(rng.choice(favourites)))
                elif r < 0.7:
                    pool = np.flatnonzero(np.isin(category, list(liked_cats)))
                    picks.add(int(rng.choice(pool)))
                else:
                    picks.add(int(rng.choice(products, p=popularity)))
            for p in sorted(picks):
                yield Transaction(
                    customer_id=f"c{c:05d}",
                    basket_id=f"c{c:05d}-b{b:04d}",
                    timestamp=float(when),
                    product_id=f"p{p:05d}",
                    quantity=float(1 + rng.poisson(0.3)),
                    price=float(price[p]),
                    category=f"cat{category[p]:03d}",
                    store_id=store,
                )
            b += 1
            t += rng.exponential(1.0 / rate) * DAY + DAY
