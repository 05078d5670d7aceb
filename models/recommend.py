"""``storeside-models recommend``: top-k products per request, scored by an ONNX bundle.

Same path as the edge: candidates and features from ``models.features`` on item statistics
of the transactions before the request's day, scores from ``models.bundle`` (onnxruntime).
Customers unknown to the transactions get the non-personal ranking (popular, trending).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bundle import Bundle
from models.examples import Snapshots, cutoff_plan
from models.features import (
    Context,
    CustomerHistory,
    build_features,
    generate_candidates,
)
from models.item_stats import TxArrays
from models.transactions import Transaction, TransactionFormatError, parse_timestamp

logger = logging.getLogger(__name__)

MIN_CANDIDATES = 200


@dataclass(frozen=True, slots=True)
class Request:
    customer_id: str
    timestamp: float
    store_id: str | None = None


def read_requests(path: Path) -> list[Request]:
    """``customer_id,timestamp[,store_id]``; a bad row raises with its line number."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in ("customer_id", "timestamp") if c not in header]
        if missing:
            raise TransactionFormatError(f"{path}: missing column(s) {', '.join(missing)}")
        requests = []
        for row in reader:
            try:
                store = (row.get("store_id") or "").strip() or None
                requests.append(Request(row["customer_id"].strip(),
                                        parse_timestamp(row["timestamp"]), store))
            except (ValueError, AttributeError) as exc:
                raise TransactionFormatError(f"{path}:{reader.line_num}: {exc}") from exc
    return requests


def _top(scores: np.ndarray, candidates: Sequence[str], k: int) -> list[str]:
    """Best k by score; ties keep candidate order (personal, neighbours, popular)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [candidates[i] for i in order]


def recommend_all(
    rows: Sequence[Transaction], requests: Sequence[Request], bundle: Bundle, k: int,
    *, progress: bool = True, max_snapshots: int = 60,
) -> list[list[str]]:
    """Recommendations for every request, in request order."""
    from tqdm import tqdm

    tx = TxArrays.from_transactions(rows)
    by_customer: dict[str, list[Transaction]] = {}
    for row in rows:
        by_customer.setdefault(row.customer_id, []).append(row)
    plan = cutoff_plan((r.timestamp for r in requests), max_snapshots)
    order = sorted(range(len(requests)), key=lambda i: (plan[requests[i].timestamp], i))
    snapshots = Snapshots(tx)
    limit = max(MIN_CANDIDATES, 2 * k)
    results: list[list[str]] = [[] for _ in requests]
    empty = CustomerHistory.empty()
    for i in tqdm(order, desc="recommend", unit="request", disable=not progress,
                  mininterval=1.0):
        request = requests[i]
        stats = snapshots.at(plan[request.timestamp])
        own = by_customer.get(request.customer_id)
        past = [r for r in own if r.timestamp < request.timestamp] if own else []
        history = CustomerHistory.from_transactions(past) if past else empty
        context = Context(timestamp=request.timestamp, store_id=request.store_id)
        candidates = generate_candidates(history, stats, context, limit=limit)
        if candidates:
            scores = bundle.score(build_features(history, candidates, stats, context))
            results[i] = _top(scores, candidates, k)
        history.release()
    return results


def write_jsonl(path: Path, requests: Iterable[Request], items: Iterable[list[str]]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for request, chosen in zip(requests, items, strict=True):
            handle.write(json.dumps({"customer_id": request.customer_id, "items": chosen}) + "\n")
            count += 1
    return count


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("recommend", help="top-k products per request (JSON lines)")
    parser.add_argument("--bundle", required=True, type=Path, help="bundle directory")
    parser.add_argument("--transactions", required=True, type=Path, help="canonical CSV")
    parser.add_argument("--requests", required=True, type=Path,
                        help="CSV: customer_id,timestamp[,store_id]")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--out", required=True, type=Path, help="JSON lines output")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from models.bundle import BundleError, load_bundle
    from models.transactions import load_canonical

    if args.k <= 0:
        logger.error("--k must be positive, got %d", args.k)
        return 2
    try:
        bundle = load_bundle(args.bundle, intra_op_threads=args.threads)
    except BundleError as exc:
        logger.error("bundle unusable: %s", exc)
        return 2
    try:
        rows = load_canonical(args.transactions)
        requests = read_requests(args.requests)
    except (OSError, TransactionFormatError) as exc:
        logger.error("cannot read input: %s", exc)
        return 2
    items = recommend_all(rows, requests, bundle, args.k, progress=not args.no_progress)
    count = write_jsonl(args.out, requests, items)
    logger.info("wrote %d recommendation lines to %s", count, args.out)
    return 0
