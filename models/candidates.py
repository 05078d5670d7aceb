"""Candidate generation: which products are worth scoring for one visit.

Three sources, merged without duplicates: the customer's own items (most decayed-frequent
first), items close to them in the co-purchase graphs, then what sells now (store, recent,
all-time). Anonymous visitors get only the popular part. Pure: numpy + stdlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.customer_history import CustomerHistory, resolve
from models.item_stats import ItemStats

if TYPE_CHECKING:
    from models.features import Context

PERSONAL_SHARE = 0.4  # at most this share of the list from the customer's own items
NEIGHBOUR_SHARE = 0.35  # ... and this share from co-purchase / similar-customer neighbours


def _take(ranked: np.ndarray, taken: np.ndarray, out: list[int], upto: int) -> None:
    """Append items of ``ranked`` not taken yet until ``out`` holds ``upto`` items."""
    if len(out) >= upto or len(ranked) == 0:
        return
    fresh = ranked[~taken[ranked]]
    fresh = fresh[: upto - len(out)]
    taken[fresh] = True
    out.extend(int(i) for i in fresh)


def generate_candidates(
    history: CustomerHistory, stats: ItemStats, context: Context, limit: int = 200
) -> list[str]:
    """Up to ``limit`` product ids, personal first, then neighbours, then popular."""
    if limit <= 0:
        return []
    n = stats.n_items
    taken = np.zeros(n + 1, dtype=bool)
    taken[n] = True  # the unknown-product slot is never a candidate
    chosen: list[int] = []
    extra: list[str] = []
    if history.n_baskets:
        resolved = resolve(history, stats)
        personal_quota = max(1, int(limit * PERSONAL_SHARE))
        mine = history.by_weight[:personal_quota].tolist()
        index = resolved.top_index[: len(mine)]
        _take(index, taken, chosen, personal_quota)
        # products stats never saw (a brand-new product in today's basket) still count
        extra = [history.items[i] for i, j in zip(mine, index.tolist(), strict=True) if j >= n]
        extra = extra[: max(personal_quota - len(chosen), 0)]
        if resolved.neighbours is not None:
            recent, overall, alike = resolved.neighbours
            score = (recent + overall + alike)[:n]
            quota = len(chosen) + int(limit * NEIGHBOUR_SHARE)
            top = min(quota * 2 + 16, n)
            best = np.argpartition(-score[:n], top - 1)[:top] if top < n else np.arange(n)
            best = best[np.argsort(-score[best], kind="stable")]
            _take(best[score[best] > 0], taken, chosen, min(quota, limit - len(extra)))
    store = context.store_id or history.main_store
    code = stats.store_index.get(store) if store is not None else None
    if code is not None:
        _take(stats.store_top[code], taken, chosen, (len(chosen) + limit) // 2)
    _take(stats.popular_recent, taken, chosen, limit - len(extra))
    _take(stats.popular_global, taken, chosen, limit - len(extra))
    ids = stats.product_ids
    return [ids[i] for i in chosen] + extra
