"""The ``train`` / ``recommend`` command contract on a small synthetic canonical CSV."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.bundle import load_bundle
from models.examples import last_basket_queries
from models.synthetic import synthetic_transactions
from models.train import fit_platt, split_queries
from models.transactions import write_canonical

pytest.importorskip("lightgbm")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cmd")
    rows = list(synthetic_transactions(customers=80, products=150, days=70, seed=11))
    with open(root / "H.csv", "w", newline="", encoding="utf-8") as handle:
        write_canonical(rows, handle)
    last = max(r.timestamp for r in rows)
    with open(root / "R.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "timestamp", "store_id"])
        writer.writerow(["c00003", "2023-12-30T10:00:00Z", "S0"])
        writer.writerow(["stranger", str(last + 86_400), ""])  # unknown: popular items
        writer.writerow(["c00001", str(last + 3_600), "S1"])
        writer.writerow(["c00003", str(last + 7 * 86_400), "S0"])  # repeated customer
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "models.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def bundle_dir(workdir: Path) -> Path:
    out = workdir / "bundle"
    done = _cli("train", "--transactions", str(workdir / "H.csv"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_train_writes_a_loadable_bundle(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    training = bundle.manifest["training"]
    assert training["rows"] > 1000 and training["customers"] == 80
    assert training["products"] <= 150 and training["baskets"] > 100
    assert len(training["date_range"]) == 2
    assert "recall@10" in bundle.manifest["metrics"]["validation"]
    assert 0 < bundle.manifest["metrics"]["validation"]["candidate_recall"] <= 1


def test_recommend_contract(workdir: Path, bundle_dir: Path) -> None:
    out = workdir / "recs.jsonl"
    done = _cli("recommend", "--bundle", str(bundle_dir), "--transactions",
                str(workdir / "H.csv"), "--requests", str(workdir / "R.csv"), "--k", "20",
                "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["customer_id"] for d in lines] == ["c00003", "stranger", "c00001", "c00003"]
    with open(workdir / "H.csv", newline="") as handle:
        products = {row["product_id"] for row in csv.DictReader(handle)}
    for line in lines:
        assert set(line) == {"customer_id", "items"}
        assert len(line["items"]) == 20 == len(set(line["items"]))
        assert set(line["items"]) <= products
    assert lines[0]["items"] != lines[1]["items"]  # personal vs anonymous


def test_recommend_rejects_bad_input_with_a_reason(workdir: Path, bundle_dir: Path) -> None:
    bad = workdir / "bad.csv"
    bad.write_text("customer,when\nx,1\n")
    done = _cli("recommend", "--bundle", str(bundle_dir), "--transactions",
                str(workdir / "H.csv"), "--requests", str(bad), "--k", "5",
                "--out", str(workdir / "x.jsonl"))
    assert done.returncode == 2 and "missing column" in done.stderr
    done = _cli("recommend", "--bundle", str(workdir / "no-bundle"), "--transactions",
                str(workdir / "H.csv"), "--requests", str(workdir / "R.csv"), "--k", "5",
                "--out", str(workdir / "x.jsonl"))
    assert done.returncode == 2 and "bundle unusable" in done.stderr


def test_train_rejects_too_little_history(tmp_path: Path) -> None:
    rows = list(synthetic_transactions(customers=2, products=10, days=3, seed=1))
    path = tmp_path / "tiny.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        write_canonical(rows, handle)
    done = _cli("train", "--transactions", str(path), "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "cannot train" in done.stderr


def test_platt_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-(1.5 * scores - 1.0)))).astype(float)
    a, b = fit_platt(scores, labels)
    assert a == pytest.approx(1.5, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)


def _nbr_dataset():
    from collections import defaultdict

    from models.nbr import Fold, NBRDataset, UserSequence

    rows = list(synthetic_transactions(customers=120, products=120, days=90, seed=4))
    by_user = defaultdict(list)
    for r in rows:
        by_user[r.customer_id].append(r)
    users = {}
    for uid, own in by_user.items():
        days = sorted({r.timestamp for r in own})
        if len(days) < 4:
            continue
        target = [r for r in own if r.timestamp == days[-1]]
        users[uid] = UserSequence(uid, tuple(r for r in own if r.timestamp < days[-1]),
                                  frozenset(r.product_id for r in target), days[-1])
    ids = sorted(users)
    fold = Fold(0, tuple(ids[: len(ids) * 7 // 10]), tuple(ids[len(ids) * 7 // 10:
                                                               len(ids) * 8 // 10]),
                tuple(ids[len(ids) * 8 // 10:]))
    items = frozenset(r.product_id for u in users.values() for r in u.history)
    return NBRDataset("synthetic", users, [fold], items), fold


def test_ranker_method_only_learns_from_the_past(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace as dc_replace

    import models.ranker_method as rm

    seen: list[tuple[float, float]] = []  # (window start, latest visit its model saw)
    real_fit, real_model_for = rm.fit_booster, rm.RankerMethod._model_for
    current: list[float] = []

    def model_for(self: rm.RankerMethod, start: float) -> object:
        current.append(start)
        return real_model_for(self, start)

    def fit(train: Any, val: Any, config: Any) -> Any:
        latest = max(train.times.max(), val.times.max() if val is not None else -1)
        seen.append((current[-1], float(latest)))
        return real_fit(train, val, config)

    monkeypatch.setattr(rm.RankerMethod, "_model_for", model_for)
    monkeypatch.setattr(rm, "fit_booster", fit)
    dataset, fold = _nbr_dataset()
    method = rm.RankerMethod(rm.variant(num_trees=10), window_days=7)
    method.fit(dataset, fold)
    assert seen, "no window had enough earlier visits to learn from"
    assert all(latest < start for start, latest in seen)
    for user_id in fold.test:
        user = dc_replace(dataset.users[user_id], target_items=frozenset())  # blind
        top = method.recommend(user, 10)
        assert len(top) == len(set(top)) <= 10 and set(top) <= dataset.items
        assert method._window_start(user.target_timestamp) <= user.target_timestamp


def test_validation_is_the_most_recent_visits() -> None:
    rows = list(synthetic_transactions(customers=60, products=80, days=60, seed=2))
    queries = last_basket_queries(rows, targets_per_customer=3)
    train, val = split_queries(queries, 0.1, seed=1)
    assert train and val and len(train) + len(val) == len(queries)
    assert max(q.context.timestamp for q in train) < min(q.context.timestamp for q in val)
