"""Building blocks for model-rollout tests: a hub history as POS events, bundles that are
valid but slow, and tampering with a published model the way a broken disk or an attacker
would (in the hub's own SQLite file)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import DEFAULT_BUNDLE_DIR, MANIFEST_FILE, MODEL_FILE, write_bundle
from models.features import FEATURE_NAMES
from models.transactions import Transaction


def subject_of(customer: str) -> str:
    return "m-" + hashlib.sha256(customer.encode()).hexdigest()[:16]


def basket_events(rows: Iterable[Transaction], stores: dict[str, str]) -> dict[str, list[dict]]:
    """POS basket events per hub store (``stores`` maps a synthetic store id to it), as an
    edge forwards them from its outbox."""
    baskets: dict[tuple[str | None, str], list[Transaction]] = defaultdict(list)
    for row in rows:
        baskets[(row.store_id, row.basket_id)].append(row)
    out: dict[str, list[dict]] = defaultdict(list)
    for (store, basket), lines in baskets.items():
        subject, event_id = subject_of(lines[0].customer_id), uuid.uuid4().hex
        ts = lines[0].timestamp
        out[stores[store or ""]].append({
            "event_id": event_id, "kind": "pos_basket", "subject": subject, "created_at": ts,
            "payload": {"v": 1, "event_id": event_id, "ts": ts, "basket_id": basket,
                        "subject": subject,
                        "lines": [{"product_id": r.product_id, "quantity": int(r.quantity),
                                   "unit_price": r.price, "category": r.category}
                                  for r in lines]},
        })
    return out


def copy_bundle(dest: Path, version: str, src: Path = DEFAULT_BUNDLE_DIR) -> Path:
    """The shipped bundle under another version name (still a valid bundle)."""
    shutil.copytree(src, dest)
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    manifest["version"] = version
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return dest


def slow_bundle(dest: Path, version: str, width: int = 1024, depth: int = 4) -> Path:
    """The shipped trees plus a dense detour whose result is multiplied by zero: the same
    scores, ~``depth`` GFLOP more per 1,000 candidates (tens of ms). A valid, signed, honest
    model that is simply too slow for a store device."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(DEFAULT_BUNDLE_DIR / MODEL_FILE)
    graph = model.graph
    out = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["base_score" if name == out else name for name in node.output]
    n = len(FEATURE_NAMES)
    graph.initializer.extend([
        numpy_helper.from_array(np.full((n, width), 1e-3, np.float32), "slow_w1"),
        numpy_helper.from_array(np.full((width, width), 1e-3, np.float32), "slow_w2"),
        numpy_helper.from_array(np.zeros((1,), np.float32), "slow_zero"),
    ])
    graph.node.extend([
        helper.make_node("MatMul", [graph.input[0].name, "slow_w1"], ["slow_h0"]),
        *[helper.make_node("MatMul", [f"slow_h{i}", "slow_w2"], [f"slow_h{i + 1}"])
          for i in range(depth)],
        helper.make_node("ReduceSum", [f"slow_h{depth}"], ["slow_sum"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
        helper.make_node("Add", ["base_score", "slow_nothing"], [out]),
    ])
    onnx.checker.check_model(model)
    shipped = json.loads((DEFAULT_BUNDLE_DIR / MANIFEST_FILE).read_text())
    return write_bundle(dest, model.SerializeToString(), feature_names=FEATURE_NAMES,
                        training_summary={"note": "test: shipped trees + dense detour"},
                        metrics={}, calibration=shipped["calibration"], version=version)


def tamper(hub_db: Path, version: str, **columns: Any) -> None:
    """Change a published model's row behind the hub's back (its own SQLite file)."""
    conn = sqlite3.connect(hub_db, timeout=10)
    try:
        sets = ", ".join(f"{name} = ?" for name in columns)
        with conn:
            conn.execute(f"UPDATE models SET {sets} WHERE version = ?",
                         (*columns.values(), version))
    finally:
        conn.close()


def stored_archive(hub_db: Path, version: str) -> bytes:
    conn = sqlite3.connect(hub_db, timeout=10)
    try:
        return bytes(conn.execute("SELECT archive FROM models WHERE version = ?",
                                  (version,)).fetchone()[0])
    finally:
        conn.close()
