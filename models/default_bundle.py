"""``storeside-models build-default``: rebuild the bundle shipped in ``models/default_bundle``.

A new store has no purchases of its own yet, so the edge starts from a model trained on
real grocery data (Ta-Feng, read from ``../shared/data``; never copied into the repo) with
the winning configuration; the hub replaces it with the chain's own model later.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.bundle import DEFAULT_BUNDLE_DIR

logger = logging.getLogger(__name__)

TAFENG_ZIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tafeng" / (
    "ta_feng.csv.zip")


def build_default(source: Path = TAFENG_ZIP, out: Path = DEFAULT_BUNDLE_DIR, *,
                  progress: bool = True) -> Path:
    from models.train import WINNING_CONFIG, train_bundle
    from models.transactions import load_tafeng

    rows = load_tafeng(source)
    logger.info("loaded %d Ta-Feng rows from %s", len(rows), source)
    return train_bundle(rows, out, WINNING_CONFIG, source="ta-feng (raw, all four months)",
                        progress=progress)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-default", help="rebuild models/default_bundle from the raw Ta-Feng file")
    parser.add_argument("--tafeng", type=Path, default=TAFENG_ZIP, help="raw Ta-Feng zip")
    parser.add_argument("--out", type=Path, default=DEFAULT_BUNDLE_DIR)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.tafeng.exists():
        logger.error("raw Ta-Feng file not found at %s", args.tafeng)
        return 2
    print(build_default(args.tafeng, args.out, progress=not args.no_progress))
    return 0
