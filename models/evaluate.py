"""The NBR harness and the ``storeside-models evaluate`` command.

Every method, baseline or learned, goes through ``evaluate``: per fold it is fitted on the
fold, asked once per test user for its top max(ks) items (smaller K are prefixes), and
scored with ``models.metrics``. Users are handed over with ``target_items`` emptied, so a
method cannot peek at the answer even by mistake.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.metrics import DEFAULT_KS, aggregate, mean_of, score_user
from models.nbr import Fold, Method, NBRDataset, UserSequence

logger = logging.getLogger(__name__)

DEFAULT_METHODS = "g-topfreq,p-topfreq,gp-topfreq,tifu-knn,ranker"
# history-length buckets (number of history baskets): [1], [2], [3,4], [5,7], ...
BUCKET_EDGES = (1, 2, 3, 5, 8, 13, 21)


class MethodOutputError(ValueError):
    """A method returned something that is not a list of distinct product ids."""


class UnknownMethodError(ValueError):
    """A ``--methods`` name that is neither a baseline nor the learned ranker."""


def bucket_label(n_baskets: int, edges: Sequence[int] = BUCKET_EDGES) -> str:
    """Label of the history-length bucket holding ``n_baskets``."""
    if n_baskets < edges[0]:
        return f"<{edges[0]}"
    for low, high in itertools.pairwise(edges):
        if n_baskets < high:
            return str(low) if high - low == 1 else f"{low}-{high - 1}"
    return f"{edges[-1]}+"


def bucket_order(edges: Sequence[int] = BUCKET_EDGES) -> list[str]:
    """All labels, shortest histories first (for tables and plots)."""
    labels = [f"<{edges[0]}"]
    labels += [bucket_label(e, edges) for e in edges]
    return labels


def _n_baskets(user: UserSequence) -> int:
    return len({r.basket_id for r in user.history})


def _blind(user: UserSequence) -> UserSequence:
    return dataclasses.replace(user, target_items=frozenset())


def _checked(name: str, user_id: str, ranked: object, k: int) -> list[str]:
    if not isinstance(ranked, list) or not all(isinstance(i, str) for i in ranked):
        raise MethodOutputError(f"{name}: recommend({user_id!r}) must return a list of str")
    if len(ranked) > k:
        raise MethodOutputError(f"{name}: recommend({user_id!r}) returned {len(ranked)} > {k}")
    if len(set(ranked)) != len(ranked):
        raise MethodOutputError(f"{name}: recommend({user_id!r}) returned duplicates")
    return ranked


def evaluate_fold(
    dataset: NBRDataset, method: Method, fold: Fold, ks: Sequence[int] = DEFAULT_KS,
    *, progress: bool = False,
) -> dict[str, Any]:
    """One method on one fold: aggregate, by history bucket, timings."""
    from tqdm import tqdm

    started = time.perf_counter()
    method.fit(dataset, fold)
    fitted = time.perf_counter()
    k_max = max(ks)
    per_user: list[dict[str, dict[str, float]]] = []
    by_bucket: dict[str, list[dict[str, dict[str, float]]]] = defaultdict(list)
    users = tqdm(fold.test, desc=f"{method.name} fold {fold.index}", unit="user",
                 disable=not progress, leave=False)
    for user_id in users:
        user = dataset.users[user_id]
        if not user.target_items:
            continue
        ranked = _checked(method.name, user_id, method.recommend(_blind(user), k_max), k_max)
        seen = {r.product_id for r in user.history}
        scores = score_user(ranked, user.target_items, seen, ks)
        per_user.append(scores)
        by_bucket[bucket_label(_n_baskets(user))].append(scores)
    done = time.perf_counter()
    return {
        "fold": fold.index,
        **aggregate(per_user),
        "by_history_length": {b: aggregate(s) for b, s in sorted(by_bucket.items())},
        "fit_seconds": round(fitted - started, 3),
        "recommend_ms_per_user": round(1000 * (done - fitted) / max(1, len(per_user)), 4),
    }


def evaluate(
    dataset: NBRDataset,
    methods: Iterable[Method],
    ks: Sequence[int] = DEFAULT_KS,
    folds: Sequence[int] | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """All methods on the chosen folds (default: all): per fold and the mean over folds."""
    chosen = [f for f in dataset.folds if folds is None or f.index in set(folds)]
    if not chosen:
        raise ValueError(f"no fold among {folds!r} (dataset has {len(dataset.folds)})")
    out: dict[str, Any] = {
        "dataset": dataset.name,
        "summary": dict(dataset.summary),
        "ks": list(ks),
        "folds": [f.index for f in chosen],
        "methods": {},
    }
    for method in methods:
        per_fold = []
        for fold in chosen:
            result = evaluate_fold(dataset, method, fold, ks, progress=progress)
            logger.info(
                "%s fold %d: recall@%d %.4f ndcg@%d %.4f", method.name, fold.index,
                ks[0], result["overall"][f"recall@{ks[0]}"], ks[0],
                result["overall"][f"ndcg@{ks[0]}"],
            )
            per_fold.append(result)
        buckets = sorted({b for r in per_fold for b in r["by_history_length"]},
                         key=bucket_order().index)
        out["methods"][method.name] = {
            "mean": mean_of(per_fold),
            "by_history_length": {
                b: mean_of([r["by_history_length"][b] for r in per_fold
                            if b in r["by_history_length"]])
                for b in buckets
            },
            "per_fold": per_fold,
            "fit_seconds": round(sum(r["fit_seconds"] for r in per_fold), 3),
        }
    return out


def parse_folds(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,3"`` or ``"1"`` -> fold indices."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                out.extend(range(low, high + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad fold list {text!r} (e.g. 0-4 or 0,2)") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"bad fold list {text!r} (e.g. 0-4 or 0,2)")
    return sorted(set(out))


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad K list {text!r} (e.g. 10,20)") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"bad K list {text!r} (e.g. 10,20)")
    return ks


def _ranker_factory() -> Callable[[], Method] | None:
    try:
        module = importlib.import_module("models.ranker_method")
    except ModuleNotFoundError as exc:
        if exc.name != "models.ranker_method":
            raise
        return None
    factory = getattr(module, "RankerMethod", None)
    return factory if callable(factory) else None


def build_methods(names: Sequence[str]) -> list[Method]:
    """Methods by CLI name; the learned ranker is skipped (with a message) if not there."""
    from models.baselines import BASELINES, make_baseline

    methods: list[Method] = []
    for name in names:
        if name in BASELINES:
            methods.append(make_baseline(name))
        elif name == "ranker":
            factory = _ranker_factory()
            if factory is None:
                print("evaluate: skipping 'ranker': models.ranker_method.RankerMethod "
                      "is not available yet", file=sys.stderr)
                continue
            methods.append(factory())
        else:
            known = ", ".join([*BASELINES, "ranker"])
            raise UnknownMethodError(f"unknown method {name!r}; known: {known}")
    return methods


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``evaluate`` to ``storeside-models``."""
    from models.tafeng_protocol import default_data_dir

    parser = subparsers.add_parser(
        "evaluate", help="Ta-Feng reality-check evaluation (prints JSON)",
        description="Run NBR methods on the Ta-Feng reality-check protocol (5 fixed folds).",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="folder with tafeng/ and tafeng_nbr_reality_check/")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"comma-separated (default: {DEFAULT_METHODS})")
    parser.add_argument("--folds", type=parse_folds, default=parse_folds("0-4"),
                        help="e.g. 0-4 (default) or 0,2")
    parser.add_argument("--ks", type=parse_ks, default=list(DEFAULT_KS), help="default 10,20")
    parser.add_argument("--causal", action="store_true",
                        help="history cut to days before the target (see tafeng_protocol)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild the protocol")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--report-dir", type=Path, help="write report.md and plots here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.tafeng_protocol import ProtocolDataError, load_reality_check

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    try:
        methods = build_methods(names)
        reality = load_reality_check(args.data_dir, causal=args.causal,
                                     use_cache=not args.no_cache)
    except (UnknownMethodError, ProtocolDataError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    dataset = reality.dataset
    unknown = [f for f in args.folds if f >= len(dataset.folds)]
    if unknown:
        print(f"evaluate: no fold {unknown} (dataset has {len(dataset.folds)})", file=sys.stderr)
        return 2
    results = evaluate(dataset, methods, args.ks, args.folds, progress=sys.stderr.isatty())
    text = json.dumps(results, indent=2, sort_keys=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.report_dir:
        from models.report import write_report

        write_report(results, args.report_dir)
    print(text)
    return 0


def summary_table(results: Mapping[str, Any], k: int = 10) -> list[tuple[str, float, float]]:
    """(method, recall@k, ndcg@k) of the fold means, for logs and tests."""
    return [
        (name, r["mean"]["overall"][f"recall@{k}"], r["mean"]["overall"][f"ndcg@{k}"])
        for name, r in results["methods"].items()
    ]
