"""``storeside-edge``: run one store's edge service, or only check its configuration."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.settings import SettingsError, load_settings
from edge.settings_files import unreadable_paths

logger = logging.getLogger(__name__)

# edge/devices_cli.py (admin-token: create | list | revoke, issue 6)
TABLET_COMMANDS = ("pair-tablet", "list-tablets", "revoke-tablet", "admin-token")
STREAM_SHUTDOWN_GRACE_S = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storeside-edge", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument(
        "--check-config", action="store_true", help="validate settings, print them, exit"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TABLET_COMMANDS:  # tablets and API tokens
        from edge.devices_cli import main as tablets_main

        return tablets_main(argv)
    if argv and argv[0] in ("make-certs", "mqtt-passwd", "mqtt-app-password"):
        from edge.mqtt_cli import main as mqtt_main  # the store broker's secrets

        return mqtt_main(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"storeside-edge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        shown = settings.model_dump(mode="json")
        if shown["mqtt"].get("password"):
            shown["mqtt"]["password"] = "***"
        if shown["hub"].get("store_key"):
            shown["hub"]["store_key"] = "***"
        print(json.dumps(shown, indent=2, default=str))
        problems = unreadable_paths(settings)
        for problem in problems:
            print(f"storeside-edge: invalid configuration: {problem}", file=sys.stderr)
        return 2 if problems else 0

    # One thread per native pool, set before numpy/onnxruntime load: the worker scores one
    # visit at a time, and idle OpenBLAS threads spinning on a 2-core store device steal
    # the CPU the broker and the MQTT thread need (ORT threads are set per session).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    import uvicorn  # only when serving

    # The worker thread gives the GIL back to the MQTT network thread around every
    # SQLite and onnxruntime call; with the default 5 ms switch interval, getting it back
    # under beacon load costs up to 5 ms each time. A short interval bounds that wait.
    sys.setswitchinterval(settings.gil_switch_interval_s)

    from edge.app import create_app

    app = create_app(settings)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: the lifespan stops the
    # broker link first, drains the worker, then closes SQLite.
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level=args.log_level.lower(),
        access_log=False,
        # A tablet's live feed (SSE) never finishes by itself: without a bound, SIGTERM
        # would wait for every open tablet. After this grace the streams are cancelled
        # (tablets reconnect to the next start) and the lifespan drains as before.
        timeout_graceful_shutdown=STREAM_SHUTDOWN_GRACE_S,
    )
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn re-raises it after its graceful shutdown
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
