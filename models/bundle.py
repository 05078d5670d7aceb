"""Model bundle: ``model.onnx`` + ``manifest.json``, the contract between training and the edge.

This is the only module that touches onnxruntime. A bundle is checked completely before it
is used (schema, sha256, feature list and order vs this code's ``FEATURE_NAMES``, a warm-up
inference), so a bad file fails loudly at load time with a reason, never mid-visit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.features import FEATURE_DTYPE, FEATURE_NAMES

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "default_bundle"
SCORE_DOC = ("raw ranking score (LightGBM margin, higher = more likely bought); "
             "relevance = 1 / (1 + exp(-(a * score + b)))")
_REQUIRED = {
    "format": int, "version": str, "created_at": str, "feature_names": list,
    "feature_dtypes": list, "model_file": str, "sha256": str, "training": dict,
    "metrics": dict, "calibration": dict, "score": str,
}


class BundleError(Exception):
    """A bundle that cannot be used; the message says why (missing, corrupt, mismatched)."""


@dataclass
class Bundle:
    """A loaded, verified bundle with its ONNX Runtime session."""

    path: Path
    manifest: dict[str, Any]
    version: str
    _session: Any = field(repr=False, default=None)
    _input: str = field(repr=False, default="input")

    def score(self, features: np.ndarray) -> np.ndarray:
        """Raw scores (float32, shape (n,)) for a feature matrix in ``FEATURE_NAMES`` order."""
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"features must have shape (n, {len(FEATURE_NAMES)}), got {x.shape}")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=FEATURE_DTYPE)
        (out,) = self._session.run(None, {self._input: x})
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated purchase probability in [0, 1] (Platt scaling fitted on validation)."""
        cal = self.manifest["calibration"]
        z = float(cal["a"]) * np.asarray(scores, dtype=np.float64) + float(cal["b"])
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_manifest(manifest: Any) -> None:
    """Raise ``BundleError`` unless the manifest matches format 1 and this feature code."""
    if not isinstance(manifest, dict):
        raise BundleError("manifest is not a JSON object")
    for key, kind in _REQUIRED.items():
        if key not in manifest:
            raise BundleError(f"manifest lacks {key!r}")
        if not isinstance(manifest[key], kind):
            raise BundleError(f"manifest {key!r} must be {kind.__name__}")
    if manifest["format"] != FORMAT:
        raise BundleError(f"manifest format {manifest['format']} unsupported (need {FORMAT})")
    names = tuple(manifest["feature_names"])
    if names != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in names]
        extra = [n for n in names if n not in FEATURE_NAMES]
        detail = f"missing {missing[:5]}, unexpected {extra[:5]}" if missing or extra else (
            "same names, different order")
        raise BundleError(f"bundle feature list does not match this code: {detail}")
    dtypes = manifest["feature_dtypes"]
    if dtypes != [np.dtype(FEATURE_DTYPE).name] * len(FEATURE_NAMES):
        raise BundleError(f"bundle feature dtypes {sorted(set(map(str, dtypes)))} != float32")
    cal = manifest["calibration"]
    for key in ("a", "b"):
        value = cal.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise BundleError(f"calibration {key!r} missing or not a finite number")
    if Path(manifest["model_file"]).name != manifest["model_file"]:
        raise BundleError("model_file must be a plain file name inside the bundle")


def load_bundle(path: Path | str, *, intra_op_threads: int = 1) -> Bundle:
    """Verify and load a bundle directory; ``BundleError`` says what is wrong."""
    import onnxruntime as ort  # only here: importing models.bundle stays cheap

    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"no {MANIFEST_FILE} in {root}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"unreadable {MANIFEST_FILE}: {exc}") from exc
    check_manifest(manifest)
    model_path = root / manifest["model_file"]
    if not model_path.is_file():
        raise BundleError(f"model file {manifest['model_file']} missing from {root}")
    actual = sha256_of(model_path)
    if actual != manifest["sha256"]:
        raise BundleError(f"sha256 mismatch for {manifest['model_file']}: manifest "
                          f"{manifest['sha256'][:12]}…, file {actual[:12]}…")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(intra_op_threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt graphs
        raise BundleError(f"onnxruntime cannot load {model_path.name}: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise BundleError(f"model must have one input, has {len(inputs)}")
    shape = inputs[0].shape
    width = shape[1] if len(shape) == 2 else -1
    if len(shape) != 2 or (isinstance(width, int) and width != len(FEATURE_NAMES)):
        raise BundleError(f"model input shape {shape} does not take {len(FEATURE_NAMES)} features")
    bundle = Bundle(root, manifest, manifest["version"], session, inputs[0].name)
    try:
        warm = bundle.score(np.zeros((4, len(FEATURE_NAMES)), dtype=FEATURE_DTYPE))
    except Exception as exc:
        raise BundleError(f"warm-up inference failed: {exc}") from exc
    if warm.shape != (4,) or not np.all(np.isfinite(warm)):
        raise BundleError(f"warm-up inference returned {warm.shape} / non-finite scores")
    return bundle


def write_bundle(
    out_dir: Path | str,
    onnx_bytes: bytes,
    *,
    feature_names: Sequence[str],
    training_summary: Mapping[str, Any],
    metrics: Mapping[str, Any],
    calibration: Mapping[str, float],
    version: str | None = None,
) -> Path:
    """Write ``model.onnx`` + ``manifest.json`` atomically-ish (manifest last); returns dir."""
    if tuple(feature_names) != FEATURE_NAMES:
        raise BundleError("refusing to write a bundle whose features differ from FEATURE_NAMES")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    now = datetime.now(tz=UTC)
    manifest = {
        "format": FORMAT,
        "version": version or f"{now.strftime('%Y%m%d%H%M%S')}-{digest[:8]}",
        "created_at": now.isoformat(timespec="seconds"),
        "feature_names": list(feature_names),
        "feature_dtypes": [np.dtype(FEATURE_DTYPE).name] * len(feature_names),
        "model_file": MODEL_FILE,
        "sha256": digest,
        "training": dict(training_summary),
        "metrics": dict(metrics),
        "calibration": {"a": float(calibration["a"]), "b": float(calibration["b"])},
        "score": SCORE_DOC,
    }
    check_manifest(manifest)
    _atomic_write(root / MODEL_FILE, onnx_bytes)
    _atomic_write(root / MANIFEST_FILE,
                  (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    logger.debug("bundle %s written to %s (%d bytes)", manifest["version"], root, len(onnx_bytes))
    return root


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the bundle from the service user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
