"""Reality-check protocol: id recovery on a synthetic mini Ta-Feng, counts on the real one."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import zipfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from models.assignment import INFEASIBLE, min_cost_assignment
from models.tafeng_matching import recover
from models.tafeng_protocol import (
    EXPECTED_COUNTS,
    ProtocolDataError,
    build_reality_check,
    causal_view,
    load_reality_check,
    read_json_baskets,
)
from models.transactions import TAFENG_MEMBER

RAW_HEADER = ["TRANSACTION_DT", "CUSTOMER_ID", "AGE_GROUP", "PIN_CODE", "PRODUCT_SUBCLASS",
              "PRODUCT_ID", "AMOUNT", "ASSET", "SALES_PRICE"]


@dataclass
class MiniTruth:
    """What the synthetic json was generated from (to check the recovery against)."""

    customer_of_user: dict[str, str]
    product_of_item: dict[int, str]


def write_mini_tafeng(root: Path, n_customers: int = 60, seed: int = 7) -> MiniTruth:
    """A small raw zip + reality-check folder with the real files' layout and id scheme.

    Json user ids follow a shuffled customer order and item ids first appearance, like the
    real files (whose order we cannot derive), so only matching can recover them.
    """
    rng = random.Random(seed)
    products = [f"47{i:011d}" for i in range(80)]
    weights = [1.0 / (1 + i) ** 0.8 for i in range(len(products))]
    start = date(2000, 11, 1)
    rows: list[list[str]] = []
    days: dict[str, dict[date, list[str]]] = {}
    for c in range(n_customers):
        customer = f"{1000 + c * 37:08d}"
        chosen = sorted(rng.sample(range(110), rng.randint(3, 9)))
        days[customer] = {}
        for offset in chosen:
            day = start + timedelta(days=offset)
            basket = sorted(set(rng.choices(products, weights, k=rng.randint(1, 7))))
            days[customer][day] = basket
            for product in basket:
                amount = rng.randint(1, 3)
                rows.append([f"{day.month}/{day.day}/{day.year}", customer, "30-34", "115",
                             f"1{products.index(product) % 7:05d}", product, str(amount),
                             str(10 * amount), str(12 * amount)])
    rng.shuffle(rows)  # the real file is not sorted either
    text = io.StringIO()
    text.write("\ufeff")
    writer = csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(RAW_HEADER)
    writer.writerows(rows)
    raw_dir = root / "tafeng"
    raw_dir.mkdir(parents=True)
    with zipfile.ZipFile(raw_dir / "ta_feng.csv.zip", "w") as archive:
        archive.writestr(TAFENG_MEMBER, text.getvalue())

    counts: dict[str, int] = {}
    for per_day in days.values():
        for basket in per_day.values():
            for product in basket:
                counts[product] = counts.get(product, 0) + 1
    kept = {p for p, n in counts.items() if n >= 3}
    order = sorted(days)
    rng.shuffle(order)
    history: dict[str, list[list[int]]] = {}
    future: dict[str, list[list[int]]] = {}
    item_of: dict[str, int] = {}
    customer_of_user: dict[str, str] = {}
    pending: list[tuple[str, list[list[str]], list[str]]] = []
    for customer in order:
        baskets = [[p for p in b if p in kept] for _, b in sorted(days[customer].items())]
        baskets = [b for b in baskets if b]
        if len(baskets) < 3:
            continue
        pending.append((customer, baskets[:-1], baskets[-1]))
    for number, (customer, past, _) in enumerate(pending, start=1):
        user = str(number)
        customer_of_user[user] = customer
        for basket in past:
            for product in basket:
                item_of.setdefault(product, len(item_of))
        history[user] = [[-1], *([item_of[p] for p in b] for b in past), [-1]]
    for number, (_, _, target) in enumerate(pending, start=1):
        for product in target:
            item_of.setdefault(product, len(item_of))
        future[str(number)] = [[-1], [item_of[p] for p in target], [-1]]
    folder = root / "tafeng_nbr_reality_check"
    (folder / "keyset").mkdir(parents=True)
    (folder / "tafeng_history.json").write_text(json.dumps(history))
    (folder / "tafeng_future.json").write_text(json.dumps(future))
    users = list(history)
    for k in range(5):
        rng.shuffle(users)
        n = len(users)
        cut1, cut2 = int(n * 0.72), int(n * 0.8)
        keyset = {"item_num": len(item_of), "train": users[:cut1],
                  "val": users[cut1:cut2], "test": users[cut2:]}
        (folder / "keyset" / f"tafeng_keyset_{k}.json").write_text(json.dumps(keyset))
    return MiniTruth(customer_of_user, {i: p for p, i in item_of.items()})


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MiniTruth]:
    root = tmp_path_factory.mktemp("mini_tafeng")
    return root, write_mini_tafeng(root)


def test_recovers_ids_of_a_mini_tafeng(mini: tuple[Path, MiniTruth]) -> None:
    root, truth = mini
    result = build_reality_check(root)
    assert result.ids.customer_of_user == truth.customer_of_user
    assert result.ids.product_of_item == truth.product_of_item
    assert result.verification["target_match_rate"] == 1.0
    assert result.verification["all_baskets_match_rate"] == 1.0
    dataset = result.dataset
    assert set(dataset.users) == set(truth.customer_of_user.values())
    assert len(dataset.folds) == 5
    for fold in dataset.folds:
        assert not set(fold.train) & set(fold.test)
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(dataset.users)
    for user in dataset.users.values():
        assert user.target_items <= dataset.items
        assert all(r.product_id in dataset.items for r in user.history)
        assert all(r.timestamp != user.target_timestamp for r in user.history)
        assert [r.timestamp for r in user.history] == sorted(r.timestamp for r in user.history)
        assert all(r.price is not None and r.category for r in user.history)  # metadata kept


def test_recover_also_works_on_kept_items_only(mini: tuple[Path, MiniTruth]) -> None:
    root, truth = mini
    baskets = read_json_baskets(root)
    result = build_reality_check(root)
    days = {
        u.user_id: sorted(
            {(r.timestamp, frozenset(x.product_id for x in u.history if x.timestamp == r.timestamp))
             for r in u.history}
            | {(u.target_timestamp, frozenset(u.target_items))}
        )
        for u in result.dataset.users.values()
    }
    assert recover(days, baskets).users == truth.customer_of_user


def test_cache_round_trip_and_causal_view(
    mini: tuple[Path, MiniTruth], tmp_path: Path
) -> None:
    root, _ = mini
    first = load_reality_check(root, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pkl"))) == 1
    again = load_reality_check(root, cache_dir=tmp_path)
    assert again.verification == first.verification
    causal = load_reality_check(root, cache_dir=tmp_path, causal=True)
    for user in causal.dataset.users.values():
        assert all(r.timestamp < user.target_timestamp for r in user.history)
    assert causal_view(first).verification == causal.verification


def test_missing_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProtocolDataError, match="missing input"):
        build_reality_check(tmp_path)


@pytest.mark.slow
def test_real_reality_check_counts(tafeng_zip: Path) -> None:
    """From scratch (~40-60 s): the published counts, every target basket as in the json."""
    data_dir = tafeng_zip.parent.parent
    if not (data_dir / "tafeng_nbr_reality_check").exists():
        pytest.skip("reality-check files not found")
    result = build_reality_check(data_dir)
    for key, expected in EXPECTED_COUNTS.items():
        assert result.verification[key] == expected, key
    assert result.verification["history_user_item_rows"] == 480_611
    assert result.verification["target_match_rate"] == 1.0
    assert result.verification["all_baskets_match_rate"] == 1.0
    assert [(len(f.train), len(f.val), len(f.test)) for f in result.dataset.folds] == [
        (9977, 1109, 2772)
    ] * 5
    # the first json user is customer 00046855 (checked by hand against the raw rows)
    assert result.ids.customer_of_user["1"] == "00046855"


def test_min_cost_assignment_equals_brute_force() -> None:
    rng = random.Random(1)
    for _ in range(40):
        n, m = rng.randint(1, 4), rng.randint(4, 6)
        cost = [[rng.choice([INFEASIBLE, rng.random() * 10]) for _ in range(m)] for _ in range(n)]
        feasible = [
            perm for perm in itertools.permutations(range(m), n)
            if all(cost[i][perm[i]] < INFEASIBLE for i in range(n))
        ]
        got = min_cost_assignment(cost)
        if not feasible:
            assert got is None
            continue
        assert got is not None and len(set(got)) == n
        best = min(sum(cost[i][p[i]] for i in range(n)) for p in feasible)
        assert sum(cost[i][got[i]] for i in range(n)) == pytest.approx(best)
    assert min_cost_assignment([[1.0, 2.0]] * 3) is None  # more rows than columns
