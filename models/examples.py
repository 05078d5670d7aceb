"""Training examples: (history before t, visit at t, what was bought) → feature rows + labels.

Each query is featurised exactly as the edge would at time t: candidates and features come
from ``models.features`` on an ``ItemStats`` snapshot of rows strictly before the visit's
day (the edge rebuilds its statistics nightly, so "as of the start of the day" is what it
sees too). Snapshots are taken in time order and share the expensive co-purchase graphs
for ``graph_refresh_days``. Used by ``storeside-models train`` and ``RankerMethod``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.features import (
    FEATURE_NAMES,
    Context,
    CustomerHistory,
    ItemStats,
    build_features,
    generate_candidates,
)
from models.item_stats import DAY, TxArrays
from models.transactions import Transaction

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Query:
    """One visit to rank for: the customer's past, the moment, and (for training) the truth."""

    key: str
    history: CustomerHistory
    context: Context
    target: frozenset[str] | None = None


@dataclass(slots=True)
class Examples:
    """Feature rows of many queries, concatenated; ``offsets[i]:offsets[i+1]`` is query i."""

    keys: list[str]
    X: np.ndarray
    offsets: np.ndarray
    candidates: list[list[str]]
    y: np.ndarray | None = None
    missed: np.ndarray | None = None  # target items not among a query's candidates
    targets: list[frozenset[str]] = field(default_factory=list)
    times: np.ndarray | None = None  # visit timestamp of each query

    @property
    def group_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, keep: Sequence[int]) -> Examples:
        """Queries ``keep`` (in that order); a contiguous ascending range is a view."""
        keep = list(keep)
        if keep and keep == list(range(keep[0], keep[-1] + 1)):
            lo, hi = keep[0], keep[-1] + 1
            rows = slice(int(self.offsets[lo]), int(self.offsets[hi]))
            return Examples(
                keys=self.keys[lo:hi],
                X=self.X[rows],
                offsets=self.offsets[lo:hi + 1] - self.offsets[lo],
                candidates=self.candidates[lo:hi],
                y=None if self.y is None else self.y[rows],
                missed=None if self.missed is None else self.missed[lo:hi],
                targets=self.targets[lo:hi] if self.targets else [],
                times=None if self.times is None else self.times[lo:hi],
            )
        rows_list = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]
        index = np.concatenate(rows_list) if rows_list else np.zeros(0, dtype=np.int64)
        sizes = np.array([self.offsets[i + 1] - self.offsets[i] for i in keep], dtype=np.int64)
        return Examples(
            keys=[self.keys[i] for i in keep],
            X=self.X[index],
            offsets=np.r_[0, np.cumsum(sizes)],
            candidates=[self.candidates[i] for i in keep],
            y=None if self.y is None else self.y[index],
            missed=None if self.missed is None else self.missed[keep],
            targets=[self.targets[i] for i in keep] if self.targets else [],
            times=None if self.times is None else self.times[keep],
        )


def day_start(ts: float) -> float:
    return math.floor(ts / DAY) * DAY


def cutoff_plan(times: Iterable[float], max_snapshots: int) -> dict[float, float]:
    """Snapshot time for each visit time: its day start, coarsened to at most N snapshots."""
    times = list(times)
    days = sorted({day_start(t) for t in times})
    if not days:
        return {}
    width = max(1, math.ceil(len(range(int(days[0] / DAY), int(days[-1] / DAY) + 1))
                              / max(max_snapshots, 1)))
    first = days[0]
    plan = {d: first + math.floor((d - first) / (width * DAY)) * width * DAY for d in days}
    return {t: plan[day_start(t)] for t in times}


class Snapshots:
    """``ItemStats`` at increasing cutoffs, co-purchase graphs rebuilt every few days."""

    def __init__(self, tx: TxArrays, *, graph_refresh_days: float = 7.0,
                 utc_offset_s: int = 0) -> None:
        self.tx = tx
        self.refresh = graph_refresh_days * DAY
        self.utc_offset_s = utc_offset_s
        self._graphs: ItemStats | None = None
        self._cache: dict[float, ItemStats] = {}

    def at(self, as_of: float) -> ItemStats:
        found = self._cache.get(as_of)
        if found is not None:
            return found
        base = self._graphs
        reuse = base is not None and base.as_of is not None and (
            base.as_of <= as_of < base.as_of + self.refresh)
        stats = ItemStats.from_arrays(self.tx, as_of, utc_offset_s=self.utc_offset_s,
                                      graphs_from=base if reuse else None)
        if not reuse:
            self._graphs = stats
        self._cache = {as_of: stats}  # one live snapshot: callers go in time order
        return stats


def featurise(
    queries: Sequence[Query],
    snapshots: Snapshots,
    *,
    limit: int,
    max_snapshots: int = 400,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> Examples:
    """Candidates + features (+ labels when queries carry targets) for every query.

    Queries come back in processing order (by snapshot time; ``keys`` say which is which),
    written straight into one preallocated matrix: no per-query blocks to concatenate.
    """
    plan = cutoff_plan((q.context.timestamp for q in queries), max_snapshots)
    order = sorted(range(len(queries)), key=lambda i: (plan[queries[i].context.timestamp], i))
    width = len(FEATURE_NAMES)
    X = np.empty((len(queries) * limit, width), dtype=np.float32)
    with_targets = bool(queries) and all(q.target is not None for q in queries)
    y = np.empty(len(queries) * limit, dtype=np.float32) if with_targets else None
    cands: list[list[str]] = []
    missed = np.zeros(len(queries), dtype=np.int64)
    offsets = np.zeros(len(queries) + 1, dtype=np.int64)
    iterator: Iterable[int] = progress(order) if progress is not None else order
    end = 0
    for n, i in enumerate(iterator):
        query = queries[i]
        stats = snapshots.at(plan[query.context.timestamp])
        chosen = generate_candidates(query.history, stats, query.context, limit=limit)[:limit]
        cands.append(chosen)
        start, end = end, end + len(chosen)
        X[start:end] = build_features(query.history, chosen, stats, query.context)
        offsets[n + 1] = end
        query.history.release()  # the dense neighbour scores are catalog-sized
        if y is not None and query.target is not None:
            hit = np.fromiter((c in query.target for c in chosen), dtype=np.float32,
                              count=len(chosen))
            y[start:end] = hit
            missed[n] = len(query.target) - int(hit.sum())
    ordered = [queries[i] for i in order]
    return Examples(
        keys=[q.key for q in ordered],
        X=X[:end],
        offsets=offsets,
        candidates=cands,
        y=None if y is None else y[:end],
        missed=missed if with_targets else None,
        targets=[q.target for q in ordered if q.target is not None] if with_targets else [],
        times=np.array([q.context.timestamp for q in ordered], dtype=np.float64),
    )


def last_basket_queries(
    rows: Iterable[Transaction], *, min_history_baskets: int = 2, targets_per_customer: int = 1,
) -> list[Query]:
    """Each customer's last basket(s) as targets, everything before as history."""
    by_customer: dict[str, list[Transaction]] = {}
    for row in rows:
        by_customer.setdefault(row.customer_id, []).append(row)
    queries: list[Query] = []
    for customer, own in by_customer.items():
        own.sort(key=lambda r: r.timestamp)
        baskets: dict[str, list[Transaction]] = {}
        for row in own:
            baskets.setdefault(row.basket_id, []).append(row)
        ordered = sorted(baskets.values(), key=lambda b: min(r.timestamp for r in b))
        for back in range(1, targets_per_customer + 1):
            if len(ordered) - back < min_history_baskets:
                break
            target = ordered[-back]
            t = min(r.timestamp for r in target)
            history = [r for b in ordered[: len(ordered) - back] for r in b if r.timestamp < t]
            if len({r.basket_id for r in history}) < min_history_baskets:
                continue
            store = next((r.store_id for r in target if r.store_id), None)
            queries.append(Query(
                key=f"{customer}#{back}",
                history=CustomerHistory.from_transactions(history),
                context=Context(timestamp=t, store_id=store),
                target=frozenset(r.product_id for r in target),
            ))
    return queries
