"""The harness: JSON shape, blind targets, output checks, and the CLI contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.baselines import GPTopFreq, PTopFreq
from models.evaluate import (
    MethodOutputError,
    UnknownMethodError,
    bucket_label,
    build_methods,
    evaluate,
    parse_folds,
)
from models.nbr import Fold, NBRDataset, UserSequence
from models.report import write_report
from tests.test_baselines import dataset, user
from tests.test_tafeng_protocol import write_mini_tafeng

REPO = Path(__file__).resolve().parent.parent


def tiny() -> NBRDataset:
    users = [
        user("u1", [["a", "b"], ["a"]], {"a", "c"}),
        user("u2", [["b", "c"], ["b"], ["c"]], {"b", "d"}),
        user("u3", [["c"], ["a"]], {"c"}),
        user("u4", [["d"], ["d"], ["a"], ["b"], ["c"]], {"x"}),
    ]
    ds, _ = dataset(users, train=["u1"])
    ds.folds = [Fold(0, ("u1",), (), ("u2", "u3", "u4")), Fold(1, ("u2",), (), ("u1", "u3"))]
    return ds


class Peeker:
    name = "peeker"

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        pass

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        return sorted(user.target_items)[:k]


class Broken:
    name = "broken"

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        pass

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        return ["a", "a"]


def test_result_shape_and_values() -> None:
    results = evaluate(tiny(), [PTopFreq(), GPTopFreq()], ks=(1, 2))
    assert results["folds"] == [0, 1]
    assert results["ks"] == [1, 2]
    p = results["methods"]["p-topfreq"]
    assert [r["fold"] for r in p["per_fold"]] == [0, 1]
    fold0 = p["per_fold"][0]
    assert fold0["overall"]["users"] == 3
    # u2 -> [b, c]: recall@1 1/2; u3 -> [c, a]: 1; u4 -> [d, a]: 0
    assert fold0["overall"]["recall@1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert fold0["repeat"]["users"] == 2  # u2 (b) and u3 (c) bought a target item before
    assert fold0["explore"]["users"] == 2  # u2 (d) and u4 (x)
    assert set(fold0["by_history_length"]) == {"2", "3-4", "5-7"}
    mean = p["mean"]["overall"]["recall@1"]
    assert mean == pytest.approx((fold0["overall"]["recall@1"] + p["per_fold"][1]["overall"]
                                  ["recall@1"]) / 2)
    assert set(p["by_history_length"]) == {"2", "3-4", "5-7"}
    json.dumps(results)  # serialisable


def test_methods_never_see_the_target() -> None:
    results = evaluate(tiny(), [Peeker()], ks=(2,), folds=[0])
    assert results["methods"]["peeker"]["mean"]["overall"]["recall@2"] == 0.0


def test_bad_method_output_is_a_clear_error() -> None:
    with pytest.raises(MethodOutputError, match="duplicates"):
        evaluate(tiny(), [Broken()], ks=(2,), folds=[0])
    with pytest.raises(ValueError, match="no fold"):
        evaluate(tiny(), [PTopFreq()], folds=[7])


def test_buckets_and_fold_parsing() -> None:
    assert [bucket_label(n) for n in (0, 1, 2, 3, 4, 5, 12, 13, 21, 50)] == [
        "<1", "1", "2", "3-4", "3-4", "5-7", "8-12", "13-20", "21+", "21+"]
    assert parse_folds("0-4") == [0, 1, 2, 3, 4]
    assert parse_folds("3,1") == [1, 3]
    with pytest.raises(Exception, match="bad fold"):
        parse_folds("4-1")


def test_unknown_method_and_missing_ranker(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownMethodError, match="known"):
        build_methods(["nope"])
    monkeypatch.setitem(sys.modules, "models.ranker_method", None)
    methods = build_methods(["g-topfreq", "ranker"])
    assert [m.name for m in methods] == ["g-topfreq"]
    assert "skipping 'ranker'" in capsys.readouterr().err


def test_report_files(tmp_path: Path) -> None:
    results = evaluate(tiny(), [PTopFreq(), GPTopFreq()], ks=(1, 2))
    path = write_report(results, tmp_path / "report")
    text = path.read_text()
    assert "| p-topfreq |" in text and "recall@1" in text
    assert (tmp_path / "report" / "methods.png").stat().st_size > 1000
    assert (tmp_path / "report" / "history_length.png").stat().st_size > 1000


def _cli(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORESIDE_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "models.cli", "evaluate", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_cli_contract(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_mini_tafeng(data)
    out = tmp_path / "results.json"
    done = _cli(["--data-dir", str(data), "--methods", "g-topfreq,gp-topfreq,tifu-knn",
                 "--folds", "0-1", "--out", str(out), "--report-dir", str(tmp_path / "rep")],
                tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["folds"] == [0, 1]
    assert list(printed["methods"]) == ["g-topfreq", "gp-topfreq", "tifu-knn"]
    for method in printed["methods"].values():
        assert {"recall@10", "ndcg@10", "ndcg_capped@10", "phr@20"} <= set(
            method["mean"]["overall"])
    assert printed["summary"]["target_match_rate"] == 1.0
    assert (tmp_path / "rep" / "report.md").exists()
    assert list((tmp_path / "cache").glob("*.pkl"))

    bad = _cli(["--data-dir", str(data), "--methods", "bogus"], tmp_path / "cache")
    assert bad.returncode == 2 and "unknown method 'bogus'" in bad.stderr
    missing = _cli(["--data-dir", str(tmp_path / "nowhere"), "--methods", "g-topfreq"],
                   tmp_path / "cache")
    assert missing.returncode == 2 and "missing input" in missing.stderr
    folds = _cli(["--data-dir", str(data), "--methods", "g-topfreq", "--folds", "9"],
                 tmp_path / "cache")
    assert folds.returncode == 2 and "no fold" in folds.stderr
