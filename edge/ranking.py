"""Scoring of in-stock items for one visit: shared feature code + the ONNX bundle.

The feature code is the one training uses (``models.features``), so what the model saw
offline is what it sees here. When no bundle can be loaded the store keeps serving a
store-popular list and says so (status, metric): a store must never go dark because a
model file is bad.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.metrics import EdgeMetrics
from edge.rules import Candidate
from edge.store import CatalogItem
from models.bundle import DEFAULT_BUNDLE_DIR, Bundle, BundleError, load_bundle
from models.features import (
    Context,
    CustomerHistory,
    ItemFeatures,
    ItemStats,
    build_features,
    explain,
    item_features,
)
from models.reasons import Reason
from models.transactions import Transaction

logger = logging.getLogger(__name__)

POPULAR_REASON = Reason("popular", "popular in this store")
# (bundle, seconds spent in bundle.score, ok): the model updater watches a new bundle's
# first rankings through this and may swap back (edge.model_update)
ScoreWatch = Callable[[Bundle, float, bool], None]


@dataclass(frozen=True)
class Ranked:
    """Best candidates, best first, and how they were scored."""

    candidates: list[Candidate]
    source: str  # "model" | "popular"
    model_version: str | None


class Ranker:
    """Holds the bundle and the store's item statistics; ``rank`` is thread-safe."""

    def __init__(self, metrics: EdgeMetrics, bundle_dir: Path | None, threads: int = 1) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._stats: ItemStats = ItemStats.build([])
        self._popularity: dict[str, float] = {}
        self._ids_of: tuple[Sequence[CatalogItem], list[str]] | None = None
        # item/context feature columns of the last (ids, stats, store, minute): the same
        # for every visit in that minute, ~half of build_features' time
        self._item_features: tuple[list[str], tuple[object, ...], ItemFeatures] | None = None
        self.bundle: Bundle | None = None
        self.degraded_reason: str | None = None
        self.watch: ScoreWatch | None = None
        self.load(bundle_dir or DEFAULT_BUNDLE_DIR, threads)

    def load(self, bundle_dir: Path, threads: int = 1) -> None:
        try:
            bundle = load_bundle(bundle_dir, intra_op_threads=threads)
        except BundleError as exc:
            logger.error("model bundle %s unusable, serving store-popular lists: %s",
                         bundle_dir, exc)
            self.bundle, self.degraded_reason = None, str(exc)
            self._metrics.model_loaded.set(0)
            return
        self.bundle, self.degraded_reason = bundle, None
        self._metrics.model_loaded.set(1)
        logger.info("model bundle %s loaded from %s", bundle.version, bundle_dir)

    def swap(self, bundle: Bundle | None) -> Bundle | None:
        """Serve ``bundle`` from the next ranking on; returns the bundle it replaces.

        One reference assignment: a ranking already running finishes with the bundle it
        started with, so a visit is scored by one model entirely, never a mix. None goes
        back to store-popular lists (a rollback on an edge that had no model).
        """
        previous, self.bundle = self.bundle, bundle
        self.degraded_reason = None if bundle is not None else "model rolled back"
        self._metrics.model_loaded.set(int(bundle is not None))
        return previous

    def _ids(self, items: Sequence[CatalogItem]) -> list[str]:
        """Product ids of ``items``; the service passes the same cached list every time."""
        cached = self._ids_of
        if cached is not None and cached[0] is items:
            return cached[1]
        ids = [item.product_id for item in items]
        self._ids_of = (items, ids)  # holding ``items`` keeps its identity unique
        return ids

    def _items_of(
        self, ids: list[str], stats: ItemStats, context: Context, history: CustomerHistory
    ) -> ItemFeatures:
        """``item_features`` for this ranking, reused within the minute (the finest time
        column is ``ctx_hour`` with minutes): keyed by the ids list itself (held, so its
        identity stays unique; ``_ids`` returns the same list per catalog), the stats
        snapshot, the store and the local minute."""
        store = context.store_id or history.main_store
        key = (stats.token, store, int(context.local // 60))
        cached = self._item_features
        if cached is not None and cached[0] is ids and cached[1] == key:
            return cached[2]
        items = item_features(ids, stats, context, store)
        self._item_features = (ids, key, items)
        return items

    @property
    def model_version(self) -> str | None:
        return self.bundle.version if self.bundle is not None else None

    def refresh_stats(self, purchases: Iterable[Transaction], as_of: float) -> None:
        """Rebuild item statistics (popularity, co-purchase) from the store's purchases."""
        rows = list(purchases)
        stats = ItemStats.build(rows, as_of=as_of)
        counts = Counter(t.product_id for t in rows)
        total = float(sum(counts.values())) or 1.0
        popularity = {pid: n / total for pid, n in counts.items()}
        with self._lock:
            self._stats, self._popularity = stats, popularity
        logger.info("item stats rebuilt from %d purchase rows", len(rows))

    def rank(
        self,
        history: CustomerHistory,
        items: Sequence[CatalogItem],
        context: Context,
        pool: int,
    ) -> Ranked:
        """Score ``items`` for this customer; keep the ``pool`` best (reasons come later,
        only for what the rules pick: explaining is the costly part per item)."""
        bundle = self.bundle
        if not items:
            return Ranked([], "popular" if bundle is None else "model",
                          bundle.version if bundle is not None else None)
        with self._lock:
            stats, popularity = self._stats, self._popularity
        ids = self._ids(items)
        source = "popular"
        if bundle is not None:
            scored = self._score(bundle, history, ids, stats, context)
            if scored is None and self.bundle is not bundle and self.bundle is not None:
                bundle = self.bundle  # the watcher swapped back: this visit gets the old model
                scored = self._score(bundle, history, ids, stats, context)
            if scored is not None:
                scores, relevance = scored
                source = "model"
        if source == "popular":
            scores = np.array([popularity.get(pid, 0.0) for pid in ids], dtype=np.float32)
            relevance = np.zeros_like(scores)
        best = _top_indices(scores, pool)
        # one conversion to Python floats for the pool, positional fields: ~1 us/candidate
        best_scores, best_relevance = scores[best].tolist(), relevance[best].tolist()
        candidates = []
        for i, score, rel in zip(best, best_scores, best_relevance, strict=True):
            item = items[i]
            candidates.append(Candidate(
                item.product_id, item.name, item.category, item.price, item.stock, item.zone,
                score, rel, (), style_id=item.style_id,
            ))
        return Ranked(candidates, source,
                      bundle.version if source == "model" and bundle is not None else None)

    def _score(
        self, bundle: Bundle, history: CustomerHistory, ids: list[str], stats: ItemStats,
        context: Context,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Scores and relevance, or None when the model failed (a model error must not cost
        the store its suggestions: the caller falls back). Only the model call is timed:
        that is what the latency budget of a new bundle is about."""
        watch = self.watch
        started = time.perf_counter()
        try:
            features = build_features(
                history, ids, stats, context, self._items_of(ids, stats, context, history)
            )
            started = time.perf_counter()
            scores = bundle.score(features)
            relevance = bundle.relevance(scores)
        except Exception:
            logger.exception("scoring with model %s failed", bundle.version)
            if watch is not None:
                watch(bundle, time.perf_counter() - started, False)
            return None
        if watch is not None:
            watch(bundle, time.perf_counter() - started, True)
        return scores, relevance

    def explained(
        self,
        candidates: Sequence[Candidate],
        history: CustomerHistory,
        context: Context,
        source: str,
        name_of: Callable[[str], str] | None = None,
    ) -> list[Candidate]:
        """The same candidates with their reasons ("bought 4 times…", "popular here…");
        ``name_of`` names the products a reason mentions (else their ids)."""
        with self._lock:
            stats, popularity = self._stats, self._popularity
        out = []
        for c in candidates:
            if source == "model":
                reasons = tuple(explain(history, c.product_id, stats, context,
                                        name_of=name_of))
            else:
                reasons = (POPULAR_REASON,) if popularity.get(c.product_id) else ()
            out.append(replace(c, reasons=reasons))
        return out


def _top_indices(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k best scores, best first (ties by position, deterministic)."""
    k = min(k, len(scores))
    if k == len(scores):
        order = np.argsort(-scores, kind="stable")
    else:
        part = np.argpartition(-scores, k - 1)[:k]
        order = part[np.argsort(-scores[part], kind="stable")]
    return [int(i) for i in order]
