"""``storeside-edge pair-tablet | list-tablets | revoke-tablet``: manage staff tablets;
``storeside-edge admin-token create | list | revoke``: admin and till tokens of the edge API.

Run on the store device next to the edge (same config file, same SQLite file); the edge
does not need to be stopped: it notices a revocation within half a second.
``pair-tablet`` prints a one-time pairing code, its link and the link as a QR code, never
a device token: the tablet gets its token when it redeems the code. ``admin-token create``
prints its token once (the edge keeps a hash); ``list`` shows when each was last used, so an
old token is revoked only once nothing uses it any more.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from edge.api_keys import ROLES, create_api_key, list_api_keys, revoke_api_key
from edge.devices import create_pairing_code, list_devices, pending_pairing_codes, revoke_device
from edge.pairing_codes import format_code
from edge.qr_text import terminal_qr
from edge.settings import EdgeSettings, SettingsError, load_settings
from models.api_keys import created_lines, table_lines, when
from models.durations import parse_duration

COMMANDS = ("pair-tablet", "list-tablets", "revoke-tablet", "admin-token")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="the edge's TOML settings file")
    parser = argparse.ArgumentParser(prog="storeside-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pair = sub.add_parser(
        "pair-tablet", parents=[common],
        help="pair a tablet: prints a one-time pairing code, its link and a QR code",
    )
    pair.add_argument("--label", required=True, help='e.g. "Tablet 1" or "Shoes desk"')
    pair.add_argument("--base-url", help="how tablets reach the edge (default: from [http])")
    pair.add_argument("--ttl", type=float, metavar="SECONDS",
                      help="how long the code is valid (default: tablet.pairing_ttl_s)")
    pair.add_argument("--no-qr", action="store_true", help="do not print the QR code")
    sub.add_parser("list-tablets", parents=[common],
                   help="paired tablets (revoked ones too) and pending pairing codes")
    revoke = sub.add_parser("revoke-tablet", parents=[common], help="revoke a tablet")
    revoke.add_argument("device", help="device id (tab-…) or label")
    tokens = sub.add_parser("admin-token", help="admin / till tokens of the edge API")
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[common], help="prints the new token ONCE")
    create.add_argument("--label", required=True, help='e.g. "prometheus" or "till 3"')
    create.add_argument("--role", choices=ROLES, default="admin",
                        help="admin: ops and device management; till: POST /v1/pos only")
    create.add_argument("--expires-in", type=parse_duration, metavar="DURATION",
                        help="e.g. 30d, 12h (default: until revoked)")
    actions.add_parser("list", parents=[common], help="tokens (revoked ones too), last use")
    drop = actions.add_parser("revoke", parents=[common], help="revoke a token (live)")
    drop.add_argument("key", help="key id (key-…) or label")
    return parser


def base_url(settings: EdgeSettings) -> str:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # a wildcard is no address a tablet can open
    return f"http://{host}:{settings.http.port}"


def pairing_link(base: str, code: str) -> str:
    """The link that pairs the browser opening it (the code in canonical form)."""
    return f"{base.rstrip('/')}/tablet/pair?code={quote(code)}"


def print_pairing(base: str, label: str, code: str, ttl_s: float, *, qr: bool) -> None:
    """What staff see: the code to type, its link, and the link as a QR code."""
    link = pairing_link(base, code)
    print(f"Pairing code for {label!r}: {format_code(code)}  "
          f"(works once, for {_duration(ttl_s)})")
    print(f"On the tablet open {base.rstrip('/')}/tablet and type it, or open this link:")
    print(link)
    if qr:
        print("or scan it:")
        print(terminal_qr(link))


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _list(db: Path) -> None:
    now = time.time()
    print(f"{'DEVICE':<14} {'STATE':<8} {'PAIRED':<21} {'LAST SEEN':<21} LABEL")
    for d in list_devices(db):
        state = "active" if d.active else "revoked"
        seen = when(d.last_seen_at)
        if d.last_seen_at is not None and d.active and now - d.last_seen_at < 120:
            seen += " *"
        print(f"{d.device_id:<14} {state:<8} {when(d.created_at):<21} {seen:<21} {d.label}")
    pending = pending_pairing_codes(db, now=now)
    if pending:
        print(f"\n{'PENDING CODE':<23} {'CREATED':<21} {'EXPIRES':<21} LABEL")
        for p in pending:
            left = f"in {_duration(round((p.expires_at - now) / 60) * 60 or 60)}"
            print(f"{'(not shown)':<23} {when(p.created_at):<21} {left:<21} {p.label}")


def admin_token(args: argparse.Namespace, db: Path) -> int:
    if args.action == "create":
        try:
            key, token = create_api_key(db, args.label, args.role, expires_in_s=args.expires_in)
        except ValueError as exc:
            print(f"storeside-edge admin-token: {exc}", file=sys.stderr)
            return 2
        print("\n".join(created_lines(key, token, "token")))
        return 0
    if args.action == "list":
        print("\n".join(table_lines(list_api_keys(db), time.time())))
        return 0
    revoked = revoke_api_key(db, args.key)
    if not revoked:
        print(f"storeside-edge admin-token revoke: no active token {args.key!r}",
              file=sys.stderr)
        return 1
    for k in revoked:
        print(f"revoked {k.role} token {k.key_id} ({k.label})")
    return 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"storeside-edge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    db = settings.db_path
    if args.command == "admin-token":
        return admin_token(args, db)
    if args.command == "pair-tablet":
        ttl = settings.tablet.pairing_ttl_s if args.ttl is None else args.ttl
        try:
            code = create_pairing_code(db, args.label, ttl)
        except ValueError as exc:
            print(f"storeside-edge pair-tablet: {exc}", file=sys.stderr)
            return 2
        print_pairing(args.base_url or base_url(settings), args.label, code, ttl,
                      qr=not args.no_qr)
        return 0
    if args.command == "list-tablets":
        _list(db)
        return 0
    revoked = revoke_device(db, args.device)
    if not revoked:
        print(f"storeside-edge revoke-tablet: no active tablet {args.device!r}", file=sys.stderr)
        return 1
    for d in revoked:
        print(f"revoked {d.device_id} ({d.label})")
    return 0
