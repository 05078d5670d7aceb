"""``storeside-hub model-keygen | train-model | publish-model | models | rollout | rollback |
rollout-status``: the central team's model commands (docs/hub.md, "Models").

They open the hub's database like the server does, so they run beside a serving hub; the
edges see a new assignment on their next poll.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hub import model_registry as registry
from hub.serve import add_config_argument, settings_from


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _stores(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def cmd_model_keygen(args: argparse.Namespace) -> int:
    """A model-signing key pair; same file layout as ``keygen``, its own directory."""
    from hub.cli import cmd_keygen

    out = args.out or settings_from(args).models.signing_keys_dir
    kid = args.kid or time.strftime("model-%Y%m%d-%H%M%S", time.gmtime())
    return cmd_keygen(argparse.Namespace(out=out, kid=kid))


def _run(args: argparse.Namespace, action: Any) -> int:
    from hub.app import open_context
    from hub.model_training import TrainingError

    context = open_context(settings_from(args))
    try:
        result = action(context)
    except (TrainingError, registry.RolloutError) as exc:
        print(f"storeside-hub {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        context.db.close()
    _print(result)
    return 0


def cmd_train_model(args: argparse.Namespace) -> int:
    from hub.model_training import train_model

    def action(context: Any) -> Any:
        return train_model(context.db, context.settings, force=args.force)

    return _run(args, action)


def cmd_publish_model(args: argparse.Namespace) -> int:
    from hub.model_training import publish_bundle

    def action(context: Any) -> Any:
        return publish_bundle(context.db, context.settings, args.bundle, force=args.force)

    return _run(args, action)


def cmd_models(args: argparse.Namespace) -> int:
    return _run(args, lambda c: {"models": registry.list_models(c.db),
                                 "trainings": registry.trainings(c.db, args.trainings)})


def cmd_rollout(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.canary):
        print("storeside-hub rollout: error: give --canary STORES or --all", file=sys.stderr)
        return 2
    stores = None if args.all else _stores(args.canary)
    return _run(args, lambda c: {"version": args.version,
                                 "assigned": registry.rollout(c.db, args.version, stores)})


def cmd_rollback(args: argparse.Namespace) -> int:
    stores = _stores(args.stores) if args.stores else None
    return _run(args, lambda c: registry.rollback(c.db, stores))


def cmd_rollout_status(args: argparse.Namespace) -> int:
    return _run(args, lambda c: {"stores": registry.rollout_status(c.db)})


def register(sub: Any) -> None:
    keygen = sub.add_parser("model-keygen", help="new model-signing key pair (not a token key)")
    add_config_argument(keygen)
    keygen.add_argument("--out", type=Path, help="directory (default: models.signing_keys_dir)")
    keygen.add_argument("--kid", help="key id (default: model-<UTC timestamp>)")
    keygen.set_defaults(func=cmd_model_keygen)

    train = sub.add_parser("train-model", help="train on the hub's purchases, evaluate against "
                           "the current model on recent baskets, publish a winner")
    add_config_argument(train)
    train.add_argument("--force", action="store_true",
                       help="publish even if it does not beat the current model")
    train.set_defaults(func=cmd_train_model)

    publish = sub.add_parser("publish-model", help="evaluate and publish a bundle built "
                             "elsewhere (storeside-models train)")
    add_config_argument(publish)
    publish.add_argument("--bundle", required=True, type=Path, help="bundle directory")
    publish.add_argument("--force", action="store_true")
    publish.set_defaults(func=cmd_publish_model)

    listing = sub.add_parser("models", help="published models and recent training runs (JSON)")
    add_config_argument(listing)
    listing.add_argument("--trainings", type=int, default=10)
    listing.set_defaults(func=cmd_models)

    rollout = sub.add_parser("rollout", help="assign a version to canary stores or all stores")
    add_config_argument(rollout)
    rollout.add_argument("version")
    rollout.add_argument("--canary", metavar="STORES", help="comma-separated store ids")
    rollout.add_argument("--all", action="store_true", help="every registered store")
    rollout.set_defaults(func=cmd_rollout)

    rollback = sub.add_parser("rollback", help="stores back to the version they ran before")
    add_config_argument(rollback)
    rollback.add_argument("--stores", help="comma-separated (default: every assigned store)")
    rollback.set_defaults(func=cmd_rollback)

    status = sub.add_parser("rollout-status", help="assignment, report, running model per store")
    add_config_argument(status)
    status.set_defaults(func=cmd_rollout_status)
