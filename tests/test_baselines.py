"""Baselines on tiny datasets with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.baselines import (
    GPTopFreq,
    GTopFreq,
    PTopFreq,
    TifuKnn,
    baskets_of,
    make_baseline,
    tifu_weights,
)
from models.nbr import Fold, NBRDataset, UserSequence
from models.transactions import Transaction

DAY = 86_400.0


def user(user_id: str, baskets: list[list[str]], target: set[str] | None = None) -> UserSequence:
    rows = tuple(
        Transaction(user_id, f"{user_id}-{d}", d * DAY, item)
        for d, basket in enumerate(baskets)
        for item in basket
    )
    return UserSequence(user_id, rows, frozenset(target or {"z"}), len(baskets) * DAY)


def dataset(users: list[UserSequence], train: list[str]) -> tuple[NBRDataset, Fold]:
    items = frozenset(r.product_id for u in users for r in u.history) | {"z"}
    test = tuple(u.user_id for u in users if u.user_id not in train)
    fold = Fold(0, tuple(train), (), test)
    return NBRDataset("tiny", {u.user_id: u for u in users}, [fold], items), fold


def test_baskets_of_groups_by_basket_in_time_order() -> None:
    u = user("u", [["a", "b", "a"], ["c"]])
    assert baskets_of(u) == [["a", "b"], ["c"]]


def test_g_topfreq_counts_baskets_over_all_histories() -> None:
    ds, fold = dataset(
        [user("u1", [["a", "b"], ["a"]]), user("u2", [["b", "c"], ["b"]]), user("u3", [["c"]])],
        train=["u1"],
    )
    method = GTopFreq()
    method.fit(ds, fold)
    # b: 3 baskets, a: 2, c: 2 (ties by id)
    assert method.recommend(ds.users["u3"], 3) == ["b", "a", "c"]
    assert method.recommend(ds.users["u3"], 1) == ["b"]


def test_p_topfreq_frequency_then_first_purchase() -> None:
    u = user("u", [["x", "y"], ["y", "w"], ["v", "y"], ["w"]])
    method = PTopFreq()
    assert method.recommend(u, 10) == ["y", "w", "x", "v"]
    assert method.recommend(u, 2) == ["y", "w"]


def test_gp_topfreq_fills_with_popular_items() -> None:
    ds, fold = dataset(
        [user("u1", [["a", "b"], ["a"]]), user("u2", [["b", "c"], ["b"]]), user("u3", [["c"]])],
        train=["u1", "u2"],
    )
    method = GPTopFreq()
    method.fit(ds, fold)
    assert method.recommend(ds.users["u3"], 3) == ["c", "b", "a"]
    assert method.recommend(ds.users["u3"], 1) == ["c"]


def test_tifu_weights_short_history_keeps_the_group_exponent_of_m() -> None:
    w = tifu_weights(3, group_size=7, r_b=0.9, r_g=0.7)
    expected = [0.9**2 * 0.7**6 / 3, 0.9 * 0.7**5 / 3, 0.7**4 / 3]
    assert w == pytest.approx(expected)


def test_tifu_weights_long_history_groups() -> None:
    # n=10, m=7: groups of sizes 1,1,1,1,2,2,2 (oldest first)
    w = tifu_weights(10, group_size=7, r_b=0.9, r_g=0.7)
    group = [0, 1, 2, 3, 4, 4, 5, 5, 6, 6]
    size = [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    expected = [0.9 ** (9 - i) * 0.7 ** (6 - group[i]) / size[i] / 7 for i in range(10)]
    assert w == pytest.approx(expected)


def _upstream_vector(baskets: list[list[int]], n_items: int, m: int, r_b: float, r_g: float):
    """temporal_decay_sum_history + group_history_list of the authors' code, loop by loop."""
    n = len(baskets)
    his = []
    for idx in range(1, n + 1):
        vec = np.zeros(n_items)
        for e in baskets[idx - 1]:
            vec[e] = r_b ** (n - idx)
        his.append(vec)
    if n < m:
        grouped, real = his, n
    else:
        est = n / m
        base = int(np.floor(n / m))
        extra = int(np.round((est - base) * m))
        grouped = []
        if extra == 0:
            for i in range(m):
                grouped.append(sum(his[i * base + j] for j in range(base)) / base)
        else:
            last = -1
            for i in range(m - extra):
                grouped.append(sum(his[i * base + j] for j in range(base)) / base)
                last = i * base + base - 1
            size = math.ceil(est)
            for i in range(m - extra, m):
                start = last + 1 + (i - (m - extra)) * size
                grouped.append(sum(his[start + j] for j in range(size)) / size)
        real = m
    out = np.zeros(n_items)
    for idx in range(real):
        out += grouped[idx] * r_g ** (m - 1 - idx)
    return out / real


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=4), min_size=1, max_size=25))
def test_tifu_vector_matches_the_authors_code(history: list[list[int]]) -> None:
    items = [f"i{k}" for k in range(10)]
    u = user("u", [[items[k] for k in b] for b in history])
    ds, fold = dataset([u], train=["u"])
    method = TifuKnn()
    method.fit(ds, fold)
    idx, val = method.vector(u)
    dense = np.zeros(len(method._items))
    dense[idx] = val
    position = {item: i for i, item in enumerate(method._items)}
    clean = [[position[items[k]] for k in dict.fromkeys(b)] for b in history]
    assert dense == pytest.approx(_upstream_vector(clean, len(dense), 7, 0.9, 0.7))


def test_tifu_knn_mixes_own_vector_with_nearest_train_user() -> None:
    users = [
        user("near", [["a", "b"], ["a", "c"]]),
        user("far", [["x"], ["y"], ["x"]]),
        user("q", [["a"], ["a", "b"]]),
    ]
    ds, fold = dataset(users, train=["near", "far"])
    method = TifuKnn(k_neighbours=1, r_b=1.0, r_g=1.0, alpha=0.5, group_size=7)
    method.fit(ds, fold)
    # r=1: vectors are basket counts / n. q: a 1, b .5; near: a 1, b .5, c .5
    # score = .5 * q + .5 * near: a 1, b .5, c .25 (far's x, y never appear)
    assert method.recommend(ds.users["q"], 5) == ["a", "b", "c"]
    scores = method.scores(ds.users["q"])
    by_item = dict(zip(method._items, scores, strict=True))
    assert by_item["a"] == pytest.approx(1.0)
    assert by_item["b"] == pytest.approx(0.5)
    assert by_item["c"] == pytest.approx(0.25)
    assert by_item["x"] == 0.0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_tifu_neighbours_equal_brute_force(metric: str) -> None:
    rng = np.random.default_rng(3)
    items = [f"p{i}" for i in range(25)]
    users = [
        user(f"u{n}", [list(rng.choice(items, size=rng.integers(1, 5), replace=False))
                       for _ in range(rng.integers(1, 12))])
        for n in range(60)
    ]
    ds, fold = dataset(users, train=[f"u{n}" for n in range(45)])
    method = TifuKnn(k_neighbours=5, metric=metric)  # type: ignore[arg-type]
    method.fit(ds, fold)
    dense = np.zeros((45, len(method._items)))
    for row, user_id in enumerate(fold.train):
        idx, val = method.vector(ds.users[user_id])
        dense[row, idx] = val
    if metric == "cosine":
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    for user_id in fold.test:
        idx, val = method.vector(ds.users[user_id])
        q = np.zeros(len(method._items))
        q[idx] = val
        if metric == "cosine":
            q /= np.linalg.norm(q)
        distance = ((dense - q) ** 2).sum(axis=1)
        got = set(method.neighbours(idx, val).tolist())
        cutoff = np.sort(distance)[4]
        assert {int(i) for i in np.flatnonzero(distance < cutoff - 1e-12)} <= got
        assert all(distance[i] <= cutoff + 1e-12 for i in got)


def test_make_baseline_rejects_unknown_names() -> None:
    assert make_baseline("tifu-knn-cosine").name == "tifu-knn-cosine"
    with pytest.raises(ValueError, match="known"):
        make_baseline("nope")
    with pytest.raises(ValueError):
        TifuKnn(metric="manhattan")  # type: ignore[arg-type]
