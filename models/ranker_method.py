"""The learned ranker as an NBR ``Method``, so the harness scores it like every baseline.

Per fold: features for every user's visit (history before the target → target time) come
from the shared feature code on item statistics of *histories* only, strictly before the
visit's day (the harness's leakage rules). Models learn from the fold's train users'
targets plus each user's own last history basket predicted from the baskets before it
(histories of any user may be read), stop early on the val users, and only ever see visits
*before* the window of the visit they score (see ``RankerMethod``). Test users are scored
through the exported ONNX bundle, exactly as the edge does.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.bundle import Bundle, load_bundle, write_bundle
from models.examples import Examples, Query, Snapshots, featurise
from models.features import FEATURE_NAMES, Context, CustomerHistory
from models.item_stats import DAY, TxArrays
from models.nbr import Fold, NBRDataset, UserSequence
from models.train import WINNING_CONFIG, TrainConfig, fit_booster

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Prepared:
    """Fold-independent work on one dataset: featurised visits of every user."""

    visits: Examples  # one query per user: history → the target visit (no labels)
    visit_row: dict[str, int]
    prefix: Examples  # history[:-1] → last history basket (labels from history only)


MIN_VAL_QUERIES = 50
MIN_POSITIVES = 20


def _visit_query(user: UserSequence) -> Query:
    """The visit to predict, seen from before it: history rows strictly before the target."""
    past = [r for r in user.history if r.timestamp < user.target_timestamp]
    store = next((r.store_id for r in reversed(past) if r.store_id), None)
    return Query(user.user_id, CustomerHistory.from_transactions(past),
                 Context(timestamp=user.target_timestamp, store_id=store))


def _prefix_query(user: UserSequence) -> Query | None:
    """The user's last history basket as a target, the baskets before it as history."""
    baskets: dict[str, float] = {}
    for r in user.history:
        baskets[r.basket_id] = min(baskets.get(r.basket_id, r.timestamp), r.timestamp)
    if len(baskets) < 3:
        return None
    last = max(baskets, key=lambda b: (baskets[b], b))
    t = baskets[last]
    past = [r for r in user.history if r.timestamp < t]
    target = frozenset(r.product_id for r in user.history if r.basket_id == last)
    store = next((r.store_id for r in user.history if r.basket_id == last and r.store_id), None)
    return Query(f"{user.user_id}#prefix", CustomerHistory.from_transactions(past),
                 Context(timestamp=t, store_id=store), target)


class RankerMethod:
    """LightGBM ranker over the shared features, scored through ONNX Runtime.

    Time-respecting: a test visit on day t is scored by a model trained only on visits
    before the start of t's window (``window_days``), just as a deployed model only knows
    the past. Training on targets of the same days would let the trees memorise what
    everybody bought on those days (measured: +70% recall from popularity features alone),
    which no store could do.
    """

    def __init__(self, config: TrainConfig = WINNING_CONFIG, *, window_days: float = 7.0,
                 augment: bool = True, name: str = "ranker", progress: bool = False) -> None:
        self.name = name
        self.config = config
        self.window = window_days * DAY
        self.augment = augment
        self.progress = progress
        self._prepared: tuple[NBRDataset, _Prepared] | None = None  # by identity
        self._dataset: NBRDataset | None = None
        self._pool: Examples | None = None
        self._val: Examples | None = None
        self._models: dict[float, Bundle | None] = {}
        self._fold = -1
        self._tmp = tempfile.TemporaryDirectory(prefix="ranker-")

    def _prepare(self, dataset: NBRDataset) -> _Prepared:
        if self._prepared is not None and self._prepared[0] is dataset:
            return self._prepared[1]
        from tqdm import tqdm

        users = list(dataset.users.values())
        rows = [r for u in users for r in u.history]
        tx = TxArrays.from_transactions(rows)

        def bar(desc: str) -> Callable[[Iterable[int]], Iterable[int]] | None:
            if not self.progress:
                return None
            return lambda it: tqdm(it, desc=desc, mininterval=2.0)

        def snapshots() -> Snapshots:
            return Snapshots(tx, graph_refresh_days=self.config.graph_refresh_days)

        visits = featurise([_visit_query(u) for u in users], snapshots(),
                           limit=self.config.candidates,
                           max_snapshots=self.config.max_snapshots, progress=bar("visits"))
        prefix_queries = [q for q in map(_prefix_query, users) if q is not None]
        prefix = featurise(prefix_queries, snapshots(), limit=self.config.candidates,
                           max_snapshots=self.config.max_snapshots, progress=bar("prefixes"))
        prepared = _Prepared(visits, {k: i for i, k in enumerate(visits.keys)}, prefix)
        self._prepared = (dataset, prepared)
        return prepared

    def _labelled(self, prepared: _Prepared, dataset: NBRDataset,
                  users: Sequence[str]) -> Examples:
        """Visits of ``users`` with labels from their targets (train/val users only)."""
        picked = [prepared.visit_row[u] for u in users if u in prepared.visit_row]
        ex = prepared.visits.subset(picked)
        labels = []
        for i, key in enumerate(ex.keys):
            target = dataset.users[key].target_items
            labels.append(np.fromiter((c in target for c in ex.candidates[i]),
                                      dtype=np.float32, count=len(ex.candidates[i])))
        ex.y = np.concatenate(labels) if labels else np.zeros(0, np.float32)
        ex.missed = np.zeros(len(ex.keys), dtype=np.int64)
        ex.targets = [dataset.users[k].target_items for k in ex.keys]
        return ex

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        import lightgbm as lgb  # noqa: F401 - fail early when the train extra is missing

        prepared = self._prepare(dataset)
        pool = self._labelled(prepared, dataset, fold.train)
        if self.augment:
            pool = concat(pool, prepared.prefix)
        self._pool, self._val = pool, self._labelled(prepared, dataset, fold.val)
        self._dataset, self._fold, self._models = dataset, fold.index, {}
        # the visit times of the users to score are known (not their baskets): train every
        # window's model now, so fit time is fit time and recommend stays a lookup
        starts = {self._window_start(dataset.users[u].target_timestamp)
                  for u in fold.test if u in dataset.users}
        for start in sorted(starts):
            self._model_for(start)

    def _window_start(self, t: float) -> float:
        return float(np.floor(t / self.window) * self.window)

    def _model_for(self, start: float) -> Bundle | None:
        """The model of the window starting at ``start``: trained on visits before it."""
        if start in self._models:
            return self._models[start]
        from models.onnx_export import booster_to_onnx

        assert self._pool is not None and self._val is not None
        assert self._pool.times is not None and self._val.times is not None
        train = self._pool.subset(np.flatnonzero(self._pool.times < start).tolist())
        val = self._val.subset(np.flatnonzero(self._val.times < start).tolist())
        if len(val.keys) < MIN_VAL_QUERIES and len(train.keys) >= 10 * MIN_VAL_QUERIES:
            assert train.times is not None  # no val users yet: hold out the latest visits
            order = np.argsort(train.times, kind="stable")
            cut = len(order) - max(MIN_VAL_QUERIES, len(order) // 10)
            train, val = train.subset(order[:cut].tolist()), train.subset(order[cut:].tolist())
        model: Bundle | None = None
        if train.y is not None and train.y.sum() >= MIN_POSITIVES:
            booster = fit_booster(train, val if len(val.keys) else None, self.config)
            out = Path(self._tmp.name) / f"fold{self._fold}-{int(start)}"
            write_bundle(out, booster_to_onnx(booster, len(FEATURE_NAMES)),
                         feature_names=FEATURE_NAMES, training_summary={"fold": self._fold},
                         metrics={}, calibration={"a": 1.0, "b": 0.0})
            model = load_bundle(out)
            logger.info("fold %d window %s: %d trees on %d visits", self._fold, start,
                        booster.current_iteration(), len(train.keys))
        self._models[start] = model
        return model

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        if self._dataset is None:
            raise RuntimeError("fit() first")
        prepared = self._prepare(self._dataset)
        row = prepared.visit_row.get(user.user_id)
        known = self._dataset.users.get(user.user_id)
        if row is None or known is None or (known.target_timestamp, known.history) != (
                user.target_timestamp, user.history):
            tx = TxArrays.from_transactions(
                [r for u in self._dataset.users.values() for r in u.history])
            one = featurise([_visit_query(user)], Snapshots(tx), limit=self.config.candidates)
            x, candidates = one.X, one.candidates[0]
        else:
            lo, hi = prepared.visits.offsets[row], prepared.visits.offsets[row + 1]
            x, candidates = prepared.visits.X[lo:hi], prepared.visits.candidates[row]
        model = self._model_for(self._window_start(user.target_timestamp))
        # nothing to learn from yet: keep the candidate order (personal, neighbours, popular)
        scores = -np.arange(len(candidates), dtype=np.float32) if model is None else (
            model.score(x))
        order = np.argsort(-scores, kind="stable")
        items = self._dataset.items
        return [candidates[i] for i in order if candidates[i] in items][:k]


def concat(a: Examples, b: Examples) -> Examples:
    assert a.y is not None and b.y is not None
    return Examples(
        keys=[*a.keys, *b.keys],
        X=np.concatenate([a.X, b.X]),
        offsets=np.r_[a.offsets, a.offsets[-1] + b.offsets[1:]],
        candidates=[*a.candidates, *b.candidates],
        y=np.concatenate([a.y, b.y]),
        targets=[*a.targets, *b.targets],
        times=None if a.times is None or b.times is None else np.r_[a.times, b.times],
    )


def variant(**changes: object) -> TrainConfig:
    """A configuration differing from the winning one (for experiments)."""
    return replace(WINNING_CONFIG, **changes)  # type: ignore[arg-type]
