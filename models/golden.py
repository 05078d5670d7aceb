"""The golden-input check: does a bundle, loaded here, score as it did where it was signed?

At publish time the hub scores a fixed feature matrix and records the first scores in the
manifest (``golden``). Before an edge swaps to a new bundle it scores the same matrix: the
scores must be finite and match (a different ONNX Runtime, a truncated download that still
parsed, a model that was swapped after the fact would all show here), and the time it takes
must fit the store's latency budget. The matrix is derived from a hash, not from a random
generator, so hub and edge build it bit for bit alike whatever their numpy versions are.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import MANIFEST_FILE, Bundle, _atomic_write, load_bundle
from models.features import FEATURE_DTYPE, FEATURE_NAMES

GOLDEN_SEED = "storeside-golden-v1"
GOLDEN_ROWS = 1000  # about one visit's in-stock candidates: the latency that matters
EXPECTED_ROWS = 64  # scores recorded in the manifest (small, still covers many paths)
DEFAULT_TOLERANCE = 1e-4
DEFAULT_RUNS = 15


def golden_matrix(rows: int = GOLDEN_ROWS, seed: str = GOLDEN_SEED) -> np.ndarray:
    """A fixed (rows, n_features) float32 matrix: ~30% exact zeros (as in real rows), the
    rest spread over three magnitudes so trees take many different paths."""
    n = len(FEATURE_NAMES)
    words = np.frombuffer(hashlib.shake_256(seed.encode()).digest(rows * n * 12), dtype="<u4")
    u = (words.astype(np.float64) / 2.0**32).reshape(rows, 3, n)  # row i: words of row i
    magnitude = 10.0 ** np.floor(u[:, 1] * 3.0)  # 1, 10 or 100
    values = np.where(u[:, 2] < 0.3, 0.0, (u[:, 0] - 0.1) * magnitude)
    return np.ascontiguousarray(values, dtype=FEATURE_DTYPE)


def golden_record(bundle: Bundle, rows: int = EXPECTED_ROWS) -> dict[str, Any]:
    """What the hub stores in the manifest: the seed, the row count and the scores."""
    scores = bundle.score(golden_matrix()[:rows])
    if not np.all(np.isfinite(scores)):
        raise ValueError("the model gives non-finite scores on the golden input")
    return {"seed": GOLDEN_SEED, "rows": rows, "scores": [float(s) for s in scores]}


def attach_golden(bundle_dir: Path) -> dict[str, Any]:
    """Score the golden input with the bundle and write the record into its manifest."""
    bundle = load_bundle(bundle_dir)
    manifest = dict(bundle.manifest)
    manifest["golden"] = golden_record(bundle)
    _atomic_write(Path(bundle_dir) / MANIFEST_FILE,
                  (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


@dataclass(frozen=True)
class GoldenResult:
    """Outcome of the check; ``reason`` is a report code when it failed."""

    ok: bool
    reason: str | None
    detail: str
    p50_ms: float
    max_abs_diff: float


def time_scoring(bundle: Bundle, runs: int = DEFAULT_RUNS) -> float:
    """Median wall time (ms) of scoring the full golden matrix."""
    matrix = golden_matrix()
    times = []
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        bundle.score(matrix)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(statistics.median(times))


def golden_check(
    bundle: Bundle,
    *,
    budget_ms: float,
    tolerance: float = DEFAULT_TOLERANCE,
    runs: int = DEFAULT_RUNS,
) -> GoldenResult:
    """Scores match the manifest's record and p50 over ``runs`` fits ``budget_ms``."""
    record = bundle.manifest.get("golden")
    if not isinstance(record, dict) or record.get("seed") != GOLDEN_SEED or not isinstance(
            record.get("scores"), list) or not record["scores"]:
        return GoldenResult(False, "no_golden", "manifest has no golden record", 0.0, math.inf)
    try:
        expected = np.asarray(record["scores"], dtype=np.float64)
        got = bundle.score(golden_matrix()[: len(expected)]).astype(np.float64)
    except (TypeError, ValueError) as exc:
        return GoldenResult(False, "golden_mismatch", str(exc), 0.0, math.inf)
    except Exception as exc:  # ORT's own exception types
        return GoldenResult(False, "runtime_error", f"scoring failed: {exc}", 0.0, math.inf)
    if not np.all(np.isfinite(got)):
        return GoldenResult(False, "golden_nonfinite", "non-finite scores", 0.0, math.inf)
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tolerance:
        return GoldenResult(False, "golden_mismatch",
                            f"scores differ from the signed record by {diff:.3g}", 0.0, diff)
    p50 = time_scoring(bundle, runs)
    if p50 > budget_ms:
        return GoldenResult(False, "too_slow",
                            f"p50 {p50:.2f} ms > budget {budget_ms:.2f} ms", p50, diff)
    return GoldenResult(True, None, "", p50, diff)
