"""``storeside-edge pair-tablet | list-tablets | revoke-tablet``: manage staff tablets.

Run on the store device next to the edge (same config file, same SQLite file); the edge
does not need to be stopped: it notices a revocation within half a second.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from edge.devices import list_devices, pair_device, revoke_device
from edge.settings import EdgeSettings, SettingsError, load_settings

COMMANDS = ("pair-tablet", "list-tablets", "revoke-tablet")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="the edge's TOML settings file")
    parser = argparse.ArgumentParser(prog="storeside-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pair = sub.add_parser(
        "pair-tablet", parents=[common], help="pair a tablet: prints its pairing URL once"
    )
    pair.add_argument("--label", required=True, help='e.g. "Tablet 1" or "Shoes desk"')
    pair.add_argument("--base-url", help="how tablets reach the edge (default: from [http])")
    sub.add_parser("list-tablets", parents=[common], help="paired tablets, revoked ones too")
    revoke = sub.add_parser("revoke-tablet", parents=[common], help="revoke a tablet")
    revoke.add_argument("device", help="device id (tab-…) or label")
    return parser


def base_url(settings: EdgeSettings) -> str:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # a wildcard is no address a tablet can open
    return f"http://{host}:{settings.http.port}"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"storeside-edge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    db = settings.db_path
    if args.command == "pair-tablet":
        try:
            token = pair_device(db, args.label)
        except ValueError as exc:
            print(f"storeside-edge pair-tablet: {exc}", file=sys.stderr)
            return 2
        url = f"{(args.base_url or base_url(settings)).rstrip('/')}/tablet?pair={quote(token)}"
        print(f"Paired {args.label!r}. Open this URL once on the tablet (shown only now):")
        print(url)
        print(f"Device token (for Authorization: Bearer): {token}")
        return 0
    if args.command == "list-tablets":
        now = time.time()
        print(f"{'DEVICE':<14} {'STATE':<8} {'PAIRED':<21} {'LAST SEEN':<21} LABEL")
        for d in list_devices(db):
            state = "active" if d.active else "revoked"
            seen = _when(d.last_seen_at)
            if d.last_seen_at is not None and d.active and now - d.last_seen_at < 120:
                seen += " *"
            print(f"{d.device_id:<14} {state:<8} {_when(d.created_at):<21} {seen:<21} {d.label}")
        return 0
    revoked = revoke_device(db, args.device)
    if not revoked:
        print(f"storeside-edge revoke-tablet: no active tablet {args.device!r}", file=sys.stderr)
        return 1
    for d in revoked:
        print(f"revoked {d.device_id} ({d.label})")
    return 0
