"""``storeside-models train``: canonical transactions → LightGBM ranker → ONNX bundle.

The learner is deliberately small (tens of shallow trees): the edge scores ~1,000 in-stock
candidates per visit on one core within 2 ms, features included, and the ORT tree
ensemble's cost grows with trees × depth. Sizes were chosen by measuring (see the ranker
note in the issue); accuracy barely moves beyond them on Ta-Feng.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.examples import (
    Examples,
    Query,
    Snapshots,
    day_start,
    featurise,
    last_basket_queries,
)
from models.features import FEATURE_NAMES
from models.item_stats import TxArrays
from models.transactions import Transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a model; stored in the manifest so a bundle can be rebuilt."""

    objective: str = "binary"  # or "lambdarank"
    # ORT costs ~14 µs per tree per 1,000 candidates, whatever the leaves; on the Ta-Feng
    # folds 20 trees keep ~97% of 40 trees' recall for half the scoring time
    num_trees: int = 20
    num_leaves: int = 15
    learning_rate: float = 0.18
    min_data_in_leaf: int = 1000  # capped to rows/500 on small data (see lgb_params)
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    early_stopping_rounds: int = 20
    candidates: int = 200
    val_share: float = 0.1
    max_queries: int = 30_000
    targets_per_customer: int = 3
    refit_all: bool = True
    min_history_baskets: int = 2
    max_snapshots: int = 120
    graph_refresh_days: float = 7.0
    seed: int = 7
    threads: int = 2


# the configuration build-default ships (chosen on the Ta-Feng folds, see RankerMethod)
WINNING_CONFIG = TrainConfig()


def lgb_params(config: TrainConfig, rows: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": config.objective,
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        # big leaves regularise (measured on Ta-Feng), but a small chain's data must split
        "min_data_in_leaf": max(20, min(config.min_data_in_leaf, rows // 500)),
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "seed": config.seed,
        "num_threads": config.threads,
        "deterministic": True,
        "verbose": -1,
    }
    if config.objective == "lambdarank":
        params.update(metric="ndcg", eval_at=[10], lambdarank_truncation_level=20)
    else:
        params.update(metric="binary_logloss")
    return params


def fit_booster(train: Examples, val: Examples | None, config: TrainConfig) -> Any:
    """LightGBM on feature rows; early stopping on the validation queries when given."""
    import lightgbm as lgb

    assert train.y is not None
    params = lgb_params(config, len(train.X))
    ranking = config.objective == "lambdarank"
    dtrain = lgb.Dataset(train.X, train.y, group=train.group_sizes if ranking else None,
                         feature_name=list(FEATURE_NAMES), free_raw_data=False)
    valid_sets: list[Any] = []
    callbacks: list[Any] = []
    if val is not None and val.y is not None and len(val.y):
        dval = lgb.Dataset(val.X, val.y, group=val.group_sizes if ranking else None,
                           reference=dtrain)
        valid_sets = [dval]
        callbacks = [lgb.early_stopping(config.early_stopping_rounds, verbose=False)]
    booster = lgb.train(params, dtrain, num_boost_round=config.num_trees,
                        valid_sets=valid_sets, callbacks=callbacks)
    if booster.best_iteration and booster.best_iteration < booster.current_iteration():
        booster = lgb.Booster(model_str=booster.model_to_string(
            num_iteration=booster.best_iteration))
    return booster


def fit_platt(scores: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a*s + b) by Newton's method on the log-loss."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(s) == 0 or y.min() == y.max():
        return 1.0, 0.0
    a, b = 1.0, 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * s + b)))
        w = np.maximum(p * (1.0 - p), 1e-12)
        grad = np.array([np.sum((p - y) * s), np.sum(p - y)])
        hess = np.array([[np.sum(w * s * s), np.sum(w * s)], [np.sum(w * s), np.sum(w)]])
        hess += np.eye(2) * 1e-9
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a), float(b)


def ranking_metrics(examples: Examples, scores: np.ndarray, k: int = 10) -> dict[str, float]:
    """Recall@k and uncapped NDCG@k over the whole target basket (missed items count)."""
    from models.metrics import ndcg_at_k, recall_at_k

    recalls, ndcgs = [], []
    for i, target in enumerate(examples.targets):
        if not target:
            continue
        lo, hi = examples.offsets[i], examples.offsets[i + 1]
        order = np.argsort(-scores[lo:hi], kind="stable")[:k]
        top = [examples.candidates[i][j] for j in order]
        recalls.append(recall_at_k(top, target, k))
        ndcgs.append(ndcg_at_k(top, target, k))
    return {f"recall@{k}": float(np.mean(recalls)) if recalls else 0.0,
            f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else 0.0,
            "queries": len(recalls)}


def split_queries(queries: Sequence[Query], val_share: float,
                  seed: int) -> tuple[list[Query], list[Query]]:
    """Validate on the most recent visits, train on the ones before them.

    A customer split would put training and validation targets on the same days, and the
    trees would learn "what sold on those days" from the training targets: validation
    numbers would then be far above what a deployed model (which only knows the past) gets.
    Falls back to a customer split when every visit is on one day.
    """
    times = sorted(q.context.timestamp for q in queries)
    start = day_start(times[min(len(times) - 1, int(len(times) * (1.0 - val_share)))])
    train = [q for q in queries if q.context.timestamp < start]
    val = [q for q in queries if q.context.timestamp >= start]
    if train and val:
        return train, val
    customers = sorted({q.key.split("#", 1)[0] for q in queries})
    random.Random(seed).shuffle(customers)
    n_val = max(1, round(len(customers) * val_share)) if len(customers) > 1 else 0
    val_customers = set(customers[:n_val])
    train = [q for q in queries if q.key.split("#", 1)[0] not in val_customers]
    val = [q for q in queries if q.key.split("#", 1)[0] in val_customers]
    return train, val


def train_bundle(
    rows: Sequence[Transaction], out_dir: Path, config: TrainConfig, *, source: str,
    progress: bool = True,
) -> Path:
    """The whole ``train`` command, callable from code (default bundle, tests)."""
    from tqdm import tqdm

    from models.bundle import load_bundle, write_bundle
    from models.onnx_export import booster_to_onnx

    started = time.monotonic()
    tx = TxArrays.from_transactions(rows)
    queries = last_basket_queries(rows, min_history_baskets=config.min_history_baskets,
                                  targets_per_customer=config.targets_per_customer)
    if len(queries) < 2:
        raise ValueError("too little history to train: need customers with at least "
                         f"{config.min_history_baskets + 1} baskets")
    if len(queries) > config.max_queries:
        queries = random.Random(config.seed).sample(queries, config.max_queries)
    train_q, val_q = split_queries(queries, config.val_share, config.seed)
    logger.info("training on %d queries, validating on %d", len(train_q), len(val_q))

    def bar(desc: str):
        return lambda it: tqdm(it, desc=desc, unit="visit", disable=not progress,
                               mininterval=1.0)

    snapshots = Snapshots(tx, graph_refresh_days=config.graph_refresh_days)
    everything = featurise([*train_q, *val_q], snapshots, limit=config.candidates,
                           max_snapshots=config.max_snapshots, progress=bar("features"))
    val_keys = {q.key for q in val_q}
    train_ex = everything.subset([i for i, k in enumerate(everything.keys) if k not in val_keys])
    val_ex = everything.subset([i for i, k in enumerate(everything.keys) if k in val_keys])
    booster = fit_booster(train_ex, val_ex, config)
    with tempfile.TemporaryDirectory() as tmp:
        draft = write_bundle(tmp, booster_to_onnx(booster, len(FEATURE_NAMES)),
                             feature_names=FEATURE_NAMES, training_summary={}, metrics={},
                             calibration={"a": 1.0, "b": 0.0})
        val_scores = load_bundle(draft).score(val_ex.X)
    assert val_ex.y is not None
    a, b = fit_platt(val_scores, val_ex.y)
    metrics = ranking_metrics(val_ex, val_scores)
    trees = booster.current_iteration()
    if config.refit_all:  # the shipped model also learns from the most recent visits
        booster = fit_booster(everything, None, replace(config, num_trees=trees))
    onnx_bytes = booster_to_onnx(booster, len(FEATURE_NAMES))
    stamps = [r.timestamp for r in rows]
    summary = {
        "rows": len(rows),
        "customers": len(tx.customers),
        "products": len(tx.product_ids),
        "baskets": len(np.unique(tx.basket)),
        "date_range": [_iso(min(stamps)), _iso(max(stamps))],
        "source": source,
        "queries": {"train": len(train_q), "val": len(val_q)},
        "trees": trees,
        "refit_on_all": config.refit_all,
        "validation": "the most recent visits (temporal split), before refitting",
        "config": asdict(config),
        "seconds": round(time.monotonic() - started, 1),
    }
    metrics["candidate_recall"] = _candidate_recall(val_ex)
    logger.info("validation %s", metrics)
    written = write_bundle(out_dir, onnx_bytes, feature_names=FEATURE_NAMES,
                           training_summary=summary, metrics={"validation": metrics},
                           calibration={"a": a, "b": b})
    logger.info("bundle written to %s (%d bytes, %d trees)", written, len(onnx_bytes), trees)
    return written


def _candidate_recall(examples: Examples) -> float:
    """Share of target items that made it into the candidates (the ranker's ceiling)."""
    if examples.y is None or examples.missed is None:
        return 0.0
    hits = float(examples.y.sum())
    total = hits + float(examples.missed.sum())
    return hits / total if total else 0.0


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a ranker bundle from canonical CSV")
    parser.add_argument("--transactions", required=True, type=Path, help="canonical CSV")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--objective", choices=("binary", "lambdarank"),
                        default=TrainConfig.objective)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from models.transactions import TransactionFormatError, load_canonical

    try:
        rows = load_canonical(args.transactions)
    except (OSError, TransactionFormatError) as exc:
        logger.error("cannot read transactions: %s", exc)
        return 2
    config = TrainConfig(objective=args.objective, seed=args.seed)
    try:
        out = train_bundle(rows, args.out, config, source=str(args.transactions),
                           progress=not args.no_progress)
    except ValueError as exc:
        logger.error("cannot train: %s", exc)
        return 2
    print(out)
    return 0


