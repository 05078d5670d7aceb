"""Metrics on hand-computed cases; uncapped NDCG equals the reality-check formula."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.metrics import (
    aggregate,
    mean_of,
    ndcg_at_k,
    phr_at_k,
    recall_at_k,
    repeat_ratio_at_k,
    score_user,
)

L2, L3, L4, L5 = (math.log2(n) for n in (2, 3, 4, 5))
RANKED = ["a", "b", "c", "d"]
TRUTH = {"b", "d", "x"}


def test_recall_and_phr() -> None:
    assert recall_at_k(RANKED, TRUTH, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, TRUTH, 4) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, TRUTH, 1) == 0.0
    assert phr_at_k(RANKED, TRUTH, 1) == 0.0
    assert phr_at_k(RANKED, TRUTH, 2) == 1.0


def test_ndcg_uncapped_divides_by_all_truth_items() -> None:
    # hit at rank 2 only; ideal over all 3 truth items even though k = 2
    expected = (1 / L3) / (1 / L2 + 1 / L3 + 1 / L4)
    assert ndcg_at_k(RANKED, TRUTH, 2) == pytest.approx(expected)
    assert ndcg_at_k(RANKED, TRUTH, 2) == pytest.approx(0.296082, abs=1e-6)


def test_ndcg_capped_divides_by_min_k_truth() -> None:
    expected = (1 / L3) / (1 / L2 + 1 / L3)
    assert ndcg_at_k(RANKED, TRUTH, 2, capped=True) == pytest.approx(expected)
    # with k >= |truth| both agree
    both = (1 / L3 + 1 / L5) / (1 / L2 + 1 / L3 + 1 / L4)
    assert ndcg_at_k(RANKED, TRUTH, 4) == pytest.approx(both)
    assert ndcg_at_k(RANKED, TRUTH, 4, capped=True) == pytest.approx(both)


def test_perfect_ranking_capped_is_one_uncapped_is_not() -> None:
    truth = {str(i) for i in range(30)}
    ranked = [str(i) for i in range(30)]
    assert ndcg_at_k(ranked, truth, 10, capped=True) == pytest.approx(1.0)
    assert ndcg_at_k(ranked, truth, 10) < 0.5


def test_duplicates_in_the_ranking_count_once() -> None:
    assert recall_at_k(["b", "b", "b"], {"b", "x"}, 3) == pytest.approx(0.5)


def test_empty_truth_is_an_error() -> None:
    with pytest.raises(ValueError):
        recall_at_k(RANKED, set(), 10)
    with pytest.raises(ValueError):
        score_user(RANKED, set(), set())


def test_score_user_splits_repeat_and_explore() -> None:
    scores = score_user(RANKED, TRUTH, seen_before={"b", "z"}, ks=(2,))
    assert scores["repeat"]["recall@2"] == 1.0  # repeat truth {b}
    assert scores["explore"]["recall@2"] == 0.0  # explore truth {d, x}
    assert scores["overall"]["recall@2"] == pytest.approx(1 / 3)
    assert scores["overall"]["repeat_ratio@2"] == 0.5
    assert repeat_ratio_at_k(["b"], {"b"}, 2) == 0.5  # divides by k, as upstream


def test_group_absent_when_empty_and_aggregate_counts_users() -> None:
    only_new = score_user(["a"], {"a"}, seen_before=set(), ks=(10,))
    assert "repeat" not in only_new
    mixed = score_user(["a", "b"], {"a", "b"}, seen_before={"a"}, ks=(10,))
    agg = aggregate([only_new, mixed])
    assert agg["overall"]["users"] == 2
    assert agg["repeat"]["users"] == 1
    assert agg["explore"]["users"] == 2
    assert agg["repeat"]["recall@10"] == 1.0
    folds = mean_of([agg, {"overall": {"recall@10": 0.0, "users": 2}}])
    assert folds["overall"]["recall@10"] == pytest.approx(0.5)
    assert folds["repeat"]["recall@10"] == 1.0


def _upstream_ndcg(truth: list[str], ranked: list[str], k: int) -> float:
    """evaluation/metrics.py of the reality-check repository (the published formula)."""
    dcg = sum(1 / math.log2(i + 2) for i, p in enumerate(ranked[:k]) if p in truth)
    return dcg / sum(1 / math.log2(i + 2) for i in range(len(truth)))


@given(
    st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=10, unique=True),
    st.lists(st.sampled_from("abcdefghijklmnop"), min_size=0, max_size=12, unique=True),
    st.integers(min_value=1, max_value=12),
)
def test_uncapped_matches_upstream(truth: list[str], ranked: list[str], k: int) -> None:
    assert ndcg_at_k(ranked, set(truth), k) == pytest.approx(_upstream_ndcg(truth, ranked, k))
    assert ndcg_at_k(ranked, set(truth), k, capped=True) >= ndcg_at_k(ranked, set(truth), k)
