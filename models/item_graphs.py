"""Item-item similarity graphs (co-purchase in baskets, co-occurrence per customer).

Built with integer sorts only (no sparse-matrix library: the edge ships numpy alone) and
stored as fixed-width top-k tables, so a customer's neighbour scores are two gathers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Neighbours:
    """Top-k item→item similarities as a padded table: row i = item i's best neighbours.

    Fixed-width rows (pad = the zero slot ``n_items``, weight 0) make "sum the neighbours
    of these 150 items" two fancy-indexing operations, no per-row Python or CSR walking.
    """

    table_idx: np.ndarray  # int32 (n_items + 1, k), best first
    table_w: np.ndarray  # float32 (n_items + 1, k)

    @classmethod
    def empty(cls, n_items: int, k: int = 1) -> Neighbours:
        return cls(np.full((n_items + 1, k), n_items, dtype=np.int32),
                   np.zeros((n_items + 1, k), dtype=np.float32))

    def row(self, item: int) -> list[int]:
        """Neighbours of one item, best first."""
        pad = len(self.table_idx) - 1
        return [j for j in self.table_idx[item].tolist() if j != pad]


def _group_pairs(group: np.ndarray, item: np.ndarray, n_items: int) -> tuple[np.ndarray, ...]:
    """Co-occurrence counts of distinct items within each group (basket or customer).

    Only i<j pairs are generated (half the work), then mirrored; plain counts keep this a
    single integer sort, the cost that dominates building the statistics.
    """
    order = np.lexsort((item, group))
    group, item = group[order], item[order]
    if len(group) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    position = np.arange(len(group)) - np.repeat(starts, sizes)
    partners = np.repeat(sizes, sizes) - 1 - position
    left = np.repeat(np.arange(len(group)), partners)
    right = left + 1 + (np.arange(len(left)) - np.repeat(np.cumsum(partners) - partners, partners))
    a, b = item[left], item[right]
    keys = np.sort(np.minimum(a, b) * n_items + np.maximum(a, b))
    if len(keys) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    run_starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[run_starts, len(keys)]).astype(np.float64)
    uniq = keys[run_starts]
    lo, hi = uniq // n_items, uniq % n_items
    return np.r_[lo, hi], np.r_[hi, lo], np.r_[counts, counts]


def _top_neighbours(
    src: np.ndarray, dst: np.ndarray, score: np.ndarray, n_items: int, k: int
) -> Neighbours:
    """Keep the k best-scoring neighbours of each source (one float sort, no lexsort)."""
    top = float(score.max()) if len(score) else 1.0
    order = np.argsort(src * 4.0 + (2.0 - score / top))
    src, dst, score = src[order], dst[order], score[order]
    first = np.r_[True, src[1:] != src[:-1]] if len(src) else np.zeros(0, dtype=bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(src)), 0))
    rank = np.arange(len(src)) - group_start
    keep = rank < k
    graph = Neighbours.empty(n_items, k)
    graph.table_idx[src[keep], rank[keep]] = dst[keep]
    graph.table_w[src[keep], rank[keep]] = score[keep]
    return graph


def similarity_graph(group: np.ndarray, item: np.ndarray, n_items: int, k: int) -> Neighbours:
    """Cosine item-item similarity of co-occurrence within groups, top-k per item."""
    src, dst, co = _group_pairs(group, item, n_items)
    occurrences = np.bincount(item, minlength=n_items).astype(np.float64)
    score = co / np.sqrt((occurrences[src] + 1.0) * (occurrences[dst] + 1.0))
    return _top_neighbours(src, dst, score, n_items, k)


def cap_per_group(group: np.ndarray, ts: np.ndarray, cap: int) -> np.ndarray:
    """Mask keeping the ``cap`` most recent rows of every group."""
    order = np.lexsort((-ts, group))
    g = group[order]
    first = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, dtype=bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(g)), 0))
    keep = np.zeros(len(g), dtype=bool)
    keep[order] = (np.arange(len(g)) - group_start) < cap
    return keep
