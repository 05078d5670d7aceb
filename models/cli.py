"""``storeside-models``: train, recommend, evaluate, build the default bundle.

Each sub-command lives in its own module exposing ``register(subparsers)``; heavy
imports (LightGBM, onnxmltools) happen inside the command, not here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

COMMAND_MODULES = (
    "models.train",
    "models.recommend",
    "models.evaluate",
    "models.default_bundle",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storeside-models", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    register_command_modules(sub, COMMAND_MODULES)
    return parser


def register_command_modules(sub: Any, names: Sequence[str]) -> None:
    """Let each module add its sub-command; a module not built yet is skipped, a module
    that fails to import for another reason is an error (not hidden)."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
