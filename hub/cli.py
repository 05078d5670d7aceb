"""``storeside-hub``: key generation and check-in token minting (``serve`` comes with issue 5).

Built-in commands live here; later commands are modules exposing ``register(subparsers)``
listed in ``COMMAND_MODULES`` (same pattern as ``storeside-models``), imported lazily so a
missing optional module never breaks the rest.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hub.keys import write_new
from hub.tokens import (
    check_kid,
    generate_signing_key,
    mint_checkin_token,
    parse_scopes,
    private_key_pem,
    public_key_pem,
)
from models.cli import register_command_modules

logger = logging.getLogger(__name__)

COMMAND_MODULES = ("hub.serve", "hub.admin_cli", "hub.model_cli", "hub.catalog_cli",
                   "hub.mqtt_credentials")


class CommandError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        write_new(path, data, mode)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc


def cmd_keygen(args: argparse.Namespace) -> int:
    kid = args.kid or time.strftime("hub-%Y%m%d-%H%M%S", time.gmtime())
    try:
        check_kid(kid)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    key_path, pub_path = out / f"{kid}.key", out / f"{kid}.pub"
    if pub_path.exists():
        raise CommandError(f"{pub_path} already exists; refusing to overwrite a key")
    _write_new(key_path, private_key_pem(key), 0o600)
    _write_new(pub_path, public_key_pem(key), 0o644)
    print(f"kid={kid} key={key_path} pub={pub_path}")
    return 0


def cmd_mint_token(args: argparse.Namespace) -> int:
    key_path = Path(args.key)
    kid = args.kid or key_path.stem
    try:
        private_pem = key_path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read key {key_path}: {exc.strerror}") from exc
    try:
        token = mint_checkin_token(
            private_pem,
            kid=kid,
            subject=args.subject,
            chain=args.chain,
            store=args.store,
            scopes=parse_scopes(args.scopes),
            ttl_s=args.ttl,
            token_id=args.token_id,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storeside-hub", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="new Ed25519 signing key pair (KID.key, KID.pub)")
    keygen.add_argument("--out", required=True, help="directory for the key files")
    keygen.add_argument("--kid", help="key id (default: hub-<UTC timestamp>)")
    keygen.set_defaults(func=cmd_keygen)

    mint = sub.add_parser("mint-token", help="print a signed check-in token")
    mint.add_argument("--key", required=True, help="private key file (KID.key)")
    mint.add_argument("--kid", help="key id (default: the key file's name without .key)")
    mint.add_argument("--subject", required=True, help="pseudonymous customer id")
    mint.add_argument("--chain", required=True)
    mint.add_argument("--store", required=True)
    mint.add_argument(
        "--scopes", default="personalize,staff_display,app_offers",
        help="comma-separated granted consents ('' for none)",
    )
    mint.add_argument("--ttl", type=int, default=300, help="lifetime in seconds")
    mint.add_argument("--token-id", help="jti (default: random)")
    mint.set_defaults(func=cmd_mint_token)

    register_command_modules(sub, COMMAND_MODULES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"storeside-hub {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
