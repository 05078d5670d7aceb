"""Bundle contract: ONNX vs native LightGBM parity, manifest checks, clear load errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import (
    DEFAULT_BUNDLE_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    BundleError,
    load_bundle,
    write_bundle,
)
from models.features import FEATURE_NAMES
from models.onnx_export import booster_to_onnx

lgb = pytest.importorskip("lightgbm")
F = len(FEATURE_NAMES)


def _data(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    x[:, 5] = np.round(x[:, 5])  # some ties and exact split values
    x[rng.random(size=x.shape) < 0.2] = 0.0  # many exact zeros, as in real feature rows
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=n) > 0.8).astype(np.float32)
    return x, y


@pytest.fixture(scope="module", params=["binary", "lambdarank"])
def booster(request: pytest.FixtureRequest):
    x, y = _data()
    group = [30] * (len(y) // 30) if request.param == "lambdarank" else None
    params = {"objective": request.param, "num_leaves": 15, "learning_rate": 0.2,
              "min_data_in_leaf": 10, "verbose": -1, "num_threads": 1, "seed": 1}
    return lgb.train(params, lgb.Dataset(x, y, group=group), num_boost_round=30)


def _write(tmp: Path, booster) -> Path:
    return write_bundle(tmp, booster_to_onnx(booster, F), feature_names=FEATURE_NAMES,
                        training_summary={"rows": 1}, metrics={"recall@10": 0.5},
                        calibration={"a": 0.8, "b": -2.0}, version="test-1")


def test_onnx_scores_match_native_lightgbm(tmp_path: Path, booster) -> None:
    bundle = load_bundle(_write(tmp_path, booster))
    x, _ = _data(seed=5, n=2000)
    onnx_scores = bundle.score(x)
    native = booster.predict(x, raw_score=True)
    assert onnx_scores.shape == (2000,) and onnx_scores.dtype == np.float32
    np.testing.assert_allclose(onnx_scores, native, rtol=1e-5, atol=1e-5)
    # same ranking, which is what the edge uses
    assert np.array_equal(np.argsort(-onnx_scores)[:50], np.argsort(-native)[:50])


def test_round_trip_manifest_and_relevance(tmp_path: Path, booster) -> None:
    bundle = load_bundle(_write(tmp_path, booster), intra_op_threads=1)
    assert bundle.version == "test-1"
    manifest = bundle.manifest
    assert manifest["feature_names"] == list(FEATURE_NAMES)
    assert manifest["feature_dtypes"] == ["float32"] * F
    assert manifest["model_file"] == MODEL_FILE and len(manifest["sha256"]) == 64
    scores = np.array([-5.0, 0.0, 2.5, 10.0], dtype=np.float32)
    rel = bundle.relevance(scores)
    assert np.all((rel >= 0) & (rel <= 1)) and np.all(np.diff(rel) > 0)
    assert rel[2] == pytest.approx(1 / (1 + np.exp(-(0.8 * 2.5 - 2.0))), rel=1e-6)
    assert bundle.score(np.zeros((0, F), dtype=np.float32)).shape == (0,)
    with pytest.raises(ValueError):
        bundle.score(np.zeros((3, F - 1), dtype=np.float32))


def _broken(tmp_path: Path, booster) -> Path:
    return _write(tmp_path / "b", booster)


def _edit_manifest(root: Path, **changes) -> None:
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, reason", [
    ("no_dir", "no manifest.json"),
    ("no_model", "missing"),
    ("bad_sha", "sha256 mismatch"),
    ("feature_order", "different order"),
    ("feature_missing", "missing ['item_log_count']"),
    ("bad_json", "unreadable"),
    ("bad_format", "format"),
    ("bad_dtype", "dtypes"),
    ("no_calibration", "calibration"),
    ("not_onnx", "onnxruntime cannot load"),
])
def test_load_errors_say_why(tmp_path: Path, booster, damage: str, reason: str) -> None:
    root = _broken(tmp_path, booster)
    if damage == "no_dir":
        root = tmp_path / "nowhere"
    elif damage == "no_model":
        (root / MODEL_FILE).unlink()
    elif damage == "bad_sha":
        data = bytearray((root / MODEL_FILE).read_bytes())
        data[-1] ^= 0xFF
        (root / MODEL_FILE).write_bytes(bytes(data))
    elif damage == "feature_order":
        names = list(FEATURE_NAMES)
        names[0], names[1] = names[1], names[0]
        _edit_manifest(root, feature_names=names)
    elif damage == "feature_missing":
        _edit_manifest(root, feature_names=[*list(FEATURE_NAMES[1:]), "something_else"])
    elif damage == "bad_json":
        (root / MANIFEST_FILE).write_text("{not json")
    elif damage == "bad_format":
        _edit_manifest(root, format=2)
    elif damage == "bad_dtype":
        _edit_manifest(root, feature_dtypes=["float64"] * F)
    elif damage == "no_calibration":
        _edit_manifest(root, calibration={"a": 1.0})
    elif damage == "not_onnx":
        junk = b"this is not an onnx model"
        (root / MODEL_FILE).write_bytes(junk)
        import hashlib
        _edit_manifest(root, sha256=hashlib.sha256(junk).hexdigest())
    with pytest.raises(BundleError, match=re.escape(reason)):
        load_bundle(root)


def test_write_refuses_foreign_feature_list(tmp_path: Path, booster) -> None:
    with pytest.raises(BundleError):
        write_bundle(tmp_path, booster_to_onnx(booster, F), feature_names=FEATURE_NAMES[:-1],
                     training_summary={}, metrics={}, calibration={"a": 1, "b": 0})


def test_model_with_wrong_input_width_is_rejected(tmp_path: Path) -> None:
    x, y = _data()
    small = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                      lgb.Dataset(x[:, :5], y), num_boost_round=3)
    root = write_bundle(tmp_path, booster_to_onnx(small, 5), feature_names=FEATURE_NAMES,
                        training_summary={}, metrics={}, calibration={"a": 1, "b": 0})
    with pytest.raises(BundleError, match="input shape"):
        load_bundle(root)


def test_default_bundle_is_shipped_and_loads(tmp_path: Path) -> None:
    bundle = load_bundle(DEFAULT_BUNDLE_DIR)
    size = sum(p.stat().st_size for p in DEFAULT_BUNDLE_DIR.iterdir() if p.is_file())
    assert size <= 5 * 1024 * 1024
    assert bundle.manifest["training"]["rows"] > 0
    assert 0 <= float(bundle.relevance(bundle.score(np.zeros((1, F), np.float32)))[0]) <= 1
    copy = shutil.copytree(DEFAULT_BUNDLE_DIR, tmp_path / "copy")
    assert load_bundle(copy).version == bundle.version
