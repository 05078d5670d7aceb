"""``storeside-hub serve --config hub.toml``: run the hub's HTTP API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from hub.settings import HubSettings, SettingsError, load_settings

logger = logging.getLogger(__name__)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="hub TOML settings file")


def settings_from(args: argparse.Namespace) -> HubSettings:
    """Load the settings named by ``--config``; a bad config is a clean exit 2."""
    try:
        return load_settings(args.config)
    except SettingsError as exc:
        print(f"storeside-hub: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # only when serving

    from hub.app import create_app

    settings = settings_from(args)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access_log=False,
    )
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown (the lifespan closes SQLite).
    uvicorn.Server(config).run()
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the hub HTTP API")
    add_config_argument(serve)
    serve.set_defaults(func=cmd_serve)
