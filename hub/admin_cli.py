"""``storeside-hub init | add-store | rotate-store-key | rotate-keys | import-members |
hash-token | api-key create|list|revoke | sweep``.

Each command opens the hub's database the way the server does (``hub.app.open_context``), so
it can run beside a serving hub (SQLite WAL, one short write transaction at a time).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from hub.api_keys import create_api_key, list_api_keys, revoke_api_key
from hub.members import import_members
from hub.members_csv import parse_members_csv
from hub.roles import ROLES
from hub.serve import add_config_argument, settings_from
from hub.stores import StoreExists, add_store, rotate_store_key, token_sha256
from models.api_keys import created_lines, table_lines, when
from models.durations import parse_duration


def _context(args: argparse.Namespace) -> Any:
    from hub.app import open_context

    return open_context(settings_from(args))


def cmd_init(args: argparse.Namespace) -> int:
    context = _context(args)
    try:
        keys = context.keys.valid_keys()
        if keys and not args.force_new_key:
            print(f"database {context.settings.db_path} ready; active key {keys[0].kid}")
            return 0
        key = context.keys.create_key(args.kid)
        print(f"database {context.settings.db_path} ready; new signing key {key.kid}")
        return 0
    finally:
        context.db.close()


def cmd_add_store(args: argparse.Namespace) -> int:
    context = _context(args)
    try:
        key = add_store(context.db, args.store, args.name)
    except (StoreExists, ValueError) as exc:
        print(f"storeside-hub add-store: error: {exc}", file=sys.stderr)
        return 2
    finally:
        context.db.close()
    # The only time the key exists in clear: the hub keeps its sha256.
    print(f"store={args.store}")
    print(f"store_key={key}")
    return 0


def cmd_rotate_store_key(args: argparse.Namespace) -> int:
    context = _context(args)
    try:
        key, until = rotate_store_key(context.db, args.store, args.overlap)
    except LookupError:
        print(f"storeside-hub rotate-store-key: error: no store {args.store!r}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"storeside-hub rotate-store-key: error: {exc}", file=sys.stderr)
        return 2
    finally:
        context.db.close()
    print(f"store={args.store}")
    print(f"store_key={key}")
    print(f"previous_keys_expire_at={when(until)}")
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    context = _context(args)
    try:
        if args.action == "create":
            try:
                key, token = create_api_key(context.db, args.role, args.label,
                                            expires_in_s=args.expires_in)
            except ValueError as exc:
                print(f"storeside-hub api-key: error: {exc}", file=sys.stderr)
                return 2
            print("\n".join(created_lines(key, token, "key")))
            return 0
        if args.action == "list":
            print("\n".join(table_lines(list_api_keys(context.db), context.clock())))
            return 0
        revoked = revoke_api_key(context.db, args.key)
    finally:
        context.db.close()
    if not revoked:
        print(f"storeside-hub api-key revoke: no active key {args.key!r}", file=sys.stderr)
        return 1
    for k in revoked:
        print(f"revoked {k.role} key {k.key_id} ({k.label})")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    context = _context(args)
    try:
        key = context.keys.rotate(args.kid)
        valid = [k.kid for k in context.keys.valid_keys()]
    finally:
        context.db.close()
    print(f"active key {key.kid}; valid now: {', '.join(valid)}")
    return 0


def cmd_import_members(args: argparse.Namespace) -> int:
    try:
        text = Path(args.csv).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"storeside-hub import-members: error: cannot read {args.csv}: {exc}",
              file=sys.stderr)
        return 2
    parsed = parse_members_csv(text)
    context = _context(args)
    try:
        report = import_members(context.db, parsed.records, context.settings.salt,
                                context.settings.relevance)
    finally:
        context.db.close()
    result = report.as_dict()
    result["errors"] = sorted(parsed.errors + result["errors"], key=lambda e: e["line"])
    print(json.dumps(result, indent=2))
    return 0 if not result["errors"] else 1


def cmd_hash_token(args: argparse.Namespace) -> int:
    token = args.token or getpass.getpass("token: ")
    print(token_sha256(token))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """One retention sweep (hub.retention), for operators who prefer cron to the thread."""
    from hub.retention_sweep import HubSweeper

    context = _context(args)
    try:
        settings = context.settings
        sweeper = HubSweeper(context.db, settings.retention, settings.relevance)
        if args.dry_run:
            print(json.dumps({"due": sweeper.due()}, sort_keys=True))
        else:
            print(json.dumps(sweeper.sweep().as_dict(), sort_keys=True))
        return 0
    finally:
        context.db.close()


def register(sub: Any) -> None:
    sweep = sub.add_parser("sweep", help="delete events, purchase lines and presence older "
                           "than [retention] allows (prints what went, as JSON)")
    add_config_argument(sweep)
    sweep.add_argument("--dry-run", action="store_true", help="only count what is due")
    sweep.set_defaults(func=cmd_sweep)

    init = sub.add_parser("init", help="create/migrate the hub database and a first signing key")
    add_config_argument(init)
    init.add_argument("--kid", help="key id of the first key (default: hub-<UTC time>-<hex>)")
    init.add_argument("--force-new-key", action="store_true", help=argparse.SUPPRESS)
    init.set_defaults(func=cmd_init)

    store = sub.add_parser("add-store", help="register a store; prints its key ONCE")
    add_config_argument(store)
    store.add_argument("store", help="store id (^[a-z0-9][a-z0-9_-]{0,31}$)")
    store.add_argument("--name", help="display name")
    store.set_defaults(func=cmd_add_store)

    store_key = sub.add_parser(
        "rotate-store-key", help="new key for a store (printed ONCE); the old ones keep "
        "working for --overlap, then stop")
    add_config_argument(store_key)
    store_key.add_argument("store")
    store_key.add_argument("--overlap", type=parse_duration, default=86_400.0,
                           metavar="DURATION", help="e.g. 24h (default), 0 for a leaked key")
    store_key.set_defaults(func=cmd_rotate_store_key)

    api_key = sub.add_parser("api-key", help="API keys with a role (admin, catalog, models, "
                             "privacy, viewer, app)")
    actions = api_key.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="prints the new key ONCE")
    add_config_argument(create)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--label", required=True, help='e.g. "erp-sync" or "jane (privacy)"')
    create.add_argument("--expires-in", type=parse_duration, metavar="DURATION",
                        help="e.g. 90d (default: until revoked)")
    listed = actions.add_parser("list", help="keys, revoked and expired ones too")
    add_config_argument(listed)
    revoke = actions.add_parser("revoke", help="revoke a key (at once)")
    add_config_argument(revoke)
    revoke.add_argument("key", help="key id (hk-…) or label")
    api_key.set_defaults(func=cmd_api_key)

    rotate = sub.add_parser("rotate-keys", help="new active signing key; the old one retires "
                            "after tokens.rotation_overlap_s")
    add_config_argument(rotate)
    rotate.add_argument("--kid", help="key id (default: hub-<UTC time>-<hex>)")
    rotate.set_defaults(func=cmd_rotate_keys)

    members = sub.add_parser("import-members", help="upsert members from the CRM's CSV export")
    add_config_argument(members)
    members.add_argument("--csv", required=True, help="CSV file (columns: docs/hub.md)")
    members.set_defaults(func=cmd_import_members)

    hashed = sub.add_parser("hash-token", help="sha256 of a bearer token, for admin_tokens / "
                            "app_tokens in the settings")
    hashed.add_argument("token", nargs="?", help="the token (prompted if omitted)")
    hashed.set_defaults(func=cmd_hash_token)
