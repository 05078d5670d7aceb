"""Candidate vs. current model on the most recent baskets, before a model is published.

The hub trains on everything before a cut-off and keeps the last ``days`` apart: each
customer's first basket after the cut-off is a question ("what will they buy?") that both
models answer from the history before it, through the same path the edge takes
(``models.recommend.recommend_all``: candidates, features, ONNX scores). Recall@k and NDCG@k
come from ``models.metrics``, the same as every offline evaluation. Pure: rows in, numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.bundle import Bundle
from models.metrics import aggregate, score_user
from models.recommend import Request, recommend_all
from models.transactions import Transaction

DAY = 86_400.0


@dataclass(frozen=True)
class Holdout:
    """History before the cut-off, and one question per customer after it."""

    cutoff: float
    history: list[Transaction]
    requests: list[Request]
    truths: list[frozenset[str]]


def split_recent(rows: Sequence[Transaction], days: float) -> Holdout:
    """Cut-off = ``days`` before the newest row; questions only for customers with history."""
    if not rows:
        return Holdout(0.0, [], [], [])
    cutoff = max(r.timestamp for r in rows) - days * DAY
    history = [r for r in rows if r.timestamp < cutoff]
    known = {r.customer_id for r in history}
    first: dict[str, tuple[float, str, str | None]] = {}
    for r in rows:
        if r.timestamp >= cutoff and r.customer_id in known:
            seen = first.get(r.customer_id)
            if seen is None or (r.timestamp, r.basket_id) < seen[:2]:
                first[r.customer_id] = (r.timestamp, r.basket_id, r.store_id)
    truth: dict[str, set[str]] = {c: set() for c in first}
    for r in rows:
        chosen = first.get(r.customer_id)
        if chosen is not None and r.basket_id == chosen[1] and r.timestamp == chosen[0]:
            truth[r.customer_id].add(r.product_id)
    customers = sorted(first)
    requests = [Request(c, first[c][0], first[c][2]) for c in customers]
    return Holdout(cutoff, history, requests, [frozenset(truth[c]) for c in customers])


def evaluate_on(holdout: Holdout, bundle: Bundle, k: int = 10) -> dict[str, float]:
    """Mean recall@k and NDCG@k of ``bundle`` over the held-out questions."""
    if not holdout.requests:
        return {f"recall@{k}": 0.0, f"ndcg@{k}": 0.0, "users": 0}
    ranked = recommend_all(holdout.history, holdout.requests, bundle, k, progress=False)
    seen_by: dict[str, set[str]] = {}
    for r in holdout.history:
        seen_by.setdefault(r.customer_id, set()).add(r.product_id)
    per_user = [
        score_user(items, truth, seen_by.get(req.customer_id, set()), (k,))
        for req, items, truth in zip(holdout.requests, ranked, holdout.truths, strict=True)
    ]
    overall = aggregate(per_user)["overall"]
    return {f"recall@{k}": round(float(overall[f"recall@{k}"]), 5),
            f"ndcg@{k}": round(float(overall[f"ndcg@{k}"]), 5), "users": len(per_user)}


def is_better(candidate: dict[str, float], current: dict[str, float] | None, k: int = 10,
              min_gain: float = 0.0) -> bool:
    """Recall@k decides; NDCG@k breaks an exact tie. No current model: nothing to beat."""
    if current is None:
        return True
    key, tie = f"recall@{k}", f"ndcg@{k}"
    if candidate[key] != current[key]:
        return candidate[key] > current[key] + min_gain
    return min_gain <= 0.0 and candidate[tie] > current[tie]
