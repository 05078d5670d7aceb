"""The published next-basket baselines, behind the ``models.nbr.Method`` protocol.

G-TopFreq / P-TopFreq / GP-TopFreq follow the reality-check scripts
(``methods/g-p-gp-topfreq``); TIFU-KNN follows Hu et al., SIGIR 2020, with the details of
the authors' code (``HaojiHu/TIFUKNN`` as used by the reality check), because the
published numbers come from that code:

- basket weight ``r_b ** (n - 1 - i)`` over the *whole* history (not restarted per group);
- ``m`` groups of consecutive baskets (the first ``m - n % m`` of size ``n // m``, the rest
  one larger), each the mean of its baskets; group ``g`` weighted ``r_g ** (m - 1 - g)``
  even when a short history has fewer than ``m`` groups; the sum divided by the number of
  groups;
- the ``k`` nearest *train* users by Euclidean distance between those vectors (sklearn's
  default in the authors' code; the paper speaks of similarity, ``metric="cosine"`` is
  there to compare), prediction ``alpha * own + (1 - alpha) * mean(neighbours)``.

Pure numpy. Vectors are sparse (≈35 items per user out of ~12k), so KNN runs on an
inverted index (item -> train users) instead of a dense user x item matrix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from models.nbr import Fold, NBRDataset, UserSequence


def baskets_of(user: UserSequence) -> list[list[str]]:
    """Distinct products per basket, baskets in time order, products in first-seen order."""
    order: dict[str, int] = {}
    baskets: list[dict[str, None]] = []
    for row in sorted(user.history, key=lambda r: r.timestamp):
        position = order.get(row.basket_id)
        if position is None:
            position = order[row.basket_id] = len(baskets)
            baskets.append({})
        baskets[position][row.product_id] = None
    return [list(b) for b in baskets]


def personal_ranking(user: UserSequence) -> list[str]:
    """Items by number of baskets they are in; ties by first purchase (as upstream)."""
    counts: Counter[str] = Counter()
    for basket in baskets_of(user):
        counts.update(basket)
    return [item for item, _ in counts.most_common()]  # most_common is stable on ties


def popularity_ranking(dataset: NBRDataset) -> list[str]:
    """Items by number of history baskets (all users) containing them; ties by id."""
    per_item: Counter[str] = Counter()
    for user in dataset.users.values():
        per_item.update(item for _, item in {(r.basket_id, r.product_id) for r in user.history})
    return sorted(per_item, key=lambda item: (-per_item[item], item))


class GTopFreq:
    """The globally most bought items, for everyone."""

    name = "g-topfreq"

    def __init__(self) -> None:
        self._popular: list[str] = []

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        self._popular = popularity_ranking(dataset)

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        return self._popular[:k]


class PTopFreq:
    """The user's own most often bought items (may return fewer than k)."""

    name = "p-topfreq"

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        """Nothing to learn."""

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        return personal_ranking(user)[:k]


class GPTopFreq(GTopFreq):
    """P-TopFreq, then filled up with G-TopFreq (whose fit it shares)."""

    name = "gp-topfreq"

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        out = personal_ranking(user)[:k]
        if len(out) < k:
            taken = set(out)
            for item in self._popular:
                if item not in taken:
                    out.append(item)
                    if len(out) == k:
                        break
        return out


def tifu_weights(n_baskets: int, group_size: int, r_b: float, r_g: float) -> np.ndarray:
    """Weight of each basket (oldest first) in the TIFU user vector."""
    n, m = n_baskets, group_size
    if n == 0:
        return np.zeros(0)
    within = r_b ** np.arange(n - 1, -1, -1, dtype=np.float64)
    if n < m:
        group = np.arange(n)
        size = np.ones(n)
        n_groups = n
    else:
        base, extra = divmod(n, m)
        sizes = np.array([base] * (m - extra) + [base + 1] * extra)
        group = np.repeat(np.arange(m), sizes)
        size = sizes[group].astype(np.float64)
        n_groups = m
    return within * r_g ** (m - 1 - group) / size / n_groups


class TifuKnn:
    """TIFU-KNN (Ta-Feng defaults: k=300, r_b=0.9, r_g=0.7, alpha=0.7, m=7)."""

    name: str = "tifu-knn"

    def __init__(
        self,
        k_neighbours: int = 300,
        r_b: float = 0.9,
        r_g: float = 0.7,
        alpha: float = 0.7,
        group_size: int = 7,
        metric: Literal["euclidean", "cosine"] = "euclidean",
    ) -> None:
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"unknown metric {metric!r}")
        self.k_neighbours = k_neighbours
        self.r_b, self.r_g, self.alpha, self.group_size = r_b, r_g, alpha, group_size
        self.metric = metric
        self._items: list[str] = []
        self._index: dict[str, int] = {}
        # train vectors, CSR by user and CSC by item
        empty_int: np.ndarray = np.zeros(0, dtype=np.int64)
        empty: np.ndarray = np.zeros(0)
        self._row_ptr, self._row_item, self._row_val, self._sq_norm = (
            empty_int, empty_int, empty, empty
        )
        self._col_ptr, self._col_user, self._col_val = empty_int, empty_int, empty

    def vector(self, user: UserSequence) -> tuple[np.ndarray, np.ndarray]:
        """Sparse user vector: (item indices, values), indices sorted."""
        baskets = [[self._index[i] for i in b if i in self._index] for b in baskets_of(user)]
        weights = tifu_weights(len(baskets), self.group_size, self.r_b, self.r_g)
        if not baskets:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        items = np.fromiter((i for b in baskets for i in b), dtype=np.int64)
        per_row = np.repeat(weights, [len(b) for b in baskets])
        dense = np.bincount(items, weights=per_row, minlength=len(self._items))
        nz = np.flatnonzero(dense)
        return nz, dense[nz]

    def _normalised(self, values: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            norm = float(np.sqrt(values @ values))
            return values / norm if norm > 0 else values
        return values

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        self._items = sorted(dataset.items)
        self._index = {item: i for i, item in enumerate(self._items)}
        rows_item: list[np.ndarray] = []
        rows_val: list[np.ndarray] = []
        for user_id in fold.train:
            idx, val = self.vector(dataset.users[user_id])
            rows_item.append(idx)
            rows_val.append(val)
        lengths = np.array([len(r) for r in rows_item], dtype=np.int64)
        self._row_ptr = np.concatenate([[0], np.cumsum(lengths)])
        self._row_item = np.concatenate(rows_item) if rows_item else np.zeros(0, np.int64)
        self._row_val = np.concatenate(rows_val) if rows_val else np.zeros(0)
        users = np.repeat(np.arange(len(rows_item)), lengths)
        search_val = np.concatenate([self._normalised(v) for v in rows_val]) if rows_val else (
            np.zeros(0)
        )
        self._sq_norm = np.bincount(users, weights=search_val**2, minlength=len(rows_item))
        order = np.argsort(self._row_item, kind="stable")
        self._col_user = users[order]
        self._col_val = search_val[order]
        counts = np.bincount(self._row_item, minlength=len(self._items))
        self._col_ptr = np.concatenate([[0], np.cumsum(counts)])

    @staticmethod
    def _gather(ptr: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Positions of all entries of the given CSR/CSC rows, concatenated."""
        starts, ends = ptr[keys], ptr[keys + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return np.arange(total, dtype=np.int64) + offsets

    def neighbours(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Train-row numbers of the k nearest train users (Euclidean on the vectors)."""
        n_train = len(self._sq_norm)
        query = self._normalised(val)
        positions = self._gather(self._col_ptr, idx)
        weights = self._col_val[positions] * np.repeat(query, np.diff(self._col_ptr)[idx])
        dots = np.bincount(self._col_user[positions], weights=weights, minlength=n_train)
        distance = self._sq_norm - 2.0 * dots  # + |q|^2, the same for every train user
        k = min(self.k_neighbours, n_train)
        if k < n_train:
            return np.argpartition(distance, k - 1)[:k]
        return np.arange(n_train)

    def scores(self, user: UserSequence) -> np.ndarray:
        """Dense score per item (index order of ``sorted(dataset.items)``)."""
        idx, val = self.vector(user)
        out = np.zeros(len(self._items))
        if len(self._sq_norm) == 0:
            out[idx] = val
            return out
        near = self.neighbours(idx, val)
        positions = self._gather(self._row_ptr, near)
        mean = np.bincount(
            self._row_item[positions], weights=self._row_val[positions],
            minlength=len(self._items),
        ) / len(near)
        out[idx] = self.alpha * val
        out += (1.0 - self.alpha) * mean
        return out

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        score = self.scores(user)
        positive = np.flatnonzero(score > 0)
        if len(positive) > k:
            positive = positive[np.argpartition(-score[positive], k - 1)[:k]]
        ranked = positive[np.lexsort((positive, -score[positive]))]
        return [self._items[i] for i in ranked]


def _tifu_cosine() -> TifuKnn:
    method = TifuKnn(metric="cosine")
    method.name = "tifu-knn-cosine"
    return method


Baseline = GTopFreq | PTopFreq | GPTopFreq | TifuKnn
BASELINES: dict[str, Callable[[], Baseline]] = {
    GTopFreq.name: GTopFreq,
    PTopFreq.name: PTopFreq,
    GPTopFreq.name: GPTopFreq,
    TifuKnn.name: TifuKnn,
    "tifu-knn-cosine": _tifu_cosine,
}


def make_baseline(name: str) -> Baseline:
    """A fresh baseline by its CLI name (ValueError lists the known ones)."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}") from None


def known_names() -> Sequence[str]:
    return tuple(BASELINES)
