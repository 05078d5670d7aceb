"""Next-basket ranking metrics, exactly as the NBR papers compute them, plus capped NDCG.

Why both NDCGs: the reality-check / TIFU-KNN code divides DCG@K by the ideal DCG over
*all* truth items (``uncapped``), so a user with 30 target items can never reach 1 at
K=10; the published numbers use that, so we report it to compare. The textbook NDCG@K
caps the ideal at min(K, |truth|) (``capped``), which is what a ranking objective should
be judged on. Gains are binary (an item is in the basket or not).

Repeat vs explore (as in the reality-check's ``model_performance.py``): the truth is split
into items the user bought before (repeat) and new ones (explore); each part is scored
against the same ranked list and averaged only over users whose part is non-empty. The
repeat ratio is the share of the top K that the user bought before.

Pure Python: a few thousand users per fold, so no vectorisation needed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence

DEFAULT_KS = (10, 20)
GROUPS = ("overall", "repeat", "explore")


def _hit_positions(ranked: Sequence[str], truth: Collection[str], k: int) -> list[int]:
    """0-based ranks (< k) of the first occurrence of each truth item."""
    seen: set[str] = set()
    positions = []
    for position, item in enumerate(ranked[:k]):
        if item in truth and item not in seen:
            seen.add(item)
            positions.append(position)
    return positions


def _idcg(n: int) -> float:
    return sum(1.0 / math.log2(i + 2) for i in range(n))


def recall_at_k(ranked: Sequence[str], truth: Collection[str], k: int) -> float:
    """|top-k ∩ truth| / |truth|."""
    if not truth:
        raise ValueError("recall of an empty truth basket is undefined")
    return len(_hit_positions(ranked, truth, k)) / len(truth)


def ndcg_at_k(
    ranked: Sequence[str], truth: Collection[str], k: int, *, capped: bool = False
) -> float:
    """Binary-gain NDCG@k; ideal DCG over all |truth| items unless ``capped``."""
    if not truth:
        raise ValueError("NDCG of an empty truth basket is undefined")
    dcg = sum(1.0 / math.log2(p + 2) for p in _hit_positions(ranked, truth, k))
    ideal = _idcg(min(k, len(truth)) if capped else len(truth))
    return dcg / ideal


def phr_at_k(ranked: Sequence[str], truth: Collection[str], k: int) -> float:
    """Personal hit ratio: 1 if any of the top k is in the truth."""
    return 1.0 if _hit_positions(ranked, truth, k) else 0.0


def repeat_ratio_at_k(ranked: Sequence[str], seen_before: Collection[str], k: int) -> float:
    """Share of the k slots filled with items the user bought before (divides by k)."""
    return sum(1 for item in ranked[:k] if item in seen_before) / k


def _scores(ranked: Sequence[str], truth: Collection[str], k: int) -> dict[str, float]:
    return {
        f"recall@{k}": recall_at_k(ranked, truth, k),
        f"ndcg@{k}": ndcg_at_k(ranked, truth, k),
        f"ndcg_capped@{k}": ndcg_at_k(ranked, truth, k, capped=True),
        f"phr@{k}": phr_at_k(ranked, truth, k),
    }


def score_user(
    ranked: Sequence[str],
    truth: Collection[str],
    seen_before: Collection[str],
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Metrics of one user, by group; a group is absent when its truth part is empty."""
    truth_set = frozenset(truth)
    if not truth_set:
        raise ValueError("empty truth basket")
    repeat = frozenset(i for i in truth_set if i in seen_before)
    explore = truth_set - repeat
    out: dict[str, dict[str, float]] = {"overall": {}}
    if repeat:
        out["repeat"] = {}
    if explore:
        out["explore"] = {}
    for k in ks:
        out["overall"].update(_scores(ranked, truth_set, k))
        out["overall"][f"repeat_ratio@{k}"] = repeat_ratio_at_k(ranked, seen_before, k)
        if repeat:
            out["repeat"].update(_scores(ranked, repeat, k))
        if explore:
            out["explore"].update(_scores(ranked, explore, k))
    return out


def aggregate(per_user: Iterable[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of each metric over the users that have it, plus ``users`` per group."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for scores in per_user:
        for group, metrics in scores.items():
            counts[group] += 1
            for name, value in metrics.items():
                sums[group][name] += value
    out: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        if group not in sums:
            continue
        n = counts[group]
        out[group] = {name: total / n for name, total in sorted(sums[group].items())}
        out[group]["users"] = n
    return out


def mean_of(results: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Average of per-fold aggregates (the papers' "mean of 5 folds")."""
    out: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        present = [r[group] for r in results if group in r]
        if not present:
            continue
        names = sorted(set().union(*present))
        out[group] = {
            name: sum(r[name] for r in present if name in r)
            / sum(1 for r in present if name in r)
            for name in names
        }
    return out
