"""Store-broker credentials for apps, from the chain's MQTT seed; ``storeside-hub
mqtt-seed-init | store-mqtt-secret``.

Why the hub: an app needs its MQTT password at the moment it stands at a store's door,
and the app backend already asks the hub for the check-in token then
(``POST /v1/tokens/checkin``). The hub holds one seed (``[mqtt] seed_file``); a store's
secret is ``edge.mqtt_passwords.store_secret(seed, store)`` (installed on the store
device with ``deploy/install.sh --mqtt-secret-file``), and an app's password at that
store is ``app_password(store secret, subject)``: the same derivation the store's
password file is built with, so nothing per app is stored or shipped anywhere.

Trust: whoever reads the seed can log in as any app at any store of the chain (not as a
service user: those passwords are random per store). A store's secret gives that store
only. The password handed out is useless at another store.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from edge.mqtt_passwords import app_password, check_secret, store_secret
from hub.context import HubContext, bad_request
from hub.keys import write_new
from hub.serve import add_config_argument, settings_from

logger = logging.getLogger(__name__)

SEED_BYTES = 32


class SeedUnavailable(Exception):
    """The configured seed file cannot be read or is too short."""


def read_seed(path: Path) -> bytes:
    """The seed: the file's bytes, surrounding whitespace stripped (as the edge reads a
    store secret), at least 16 bytes."""
    try:
        return check_secret(path.read_bytes().strip())
    except (OSError, ValueError) as exc:
        raise SeedUnavailable(f"MQTT seed {path}: {exc}") from exc


class SeedFile:
    """The seed, read once and again only when the file changes (mtime, size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[tuple[int, int], bytes] | None = None

    def seed(self) -> bytes:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SeedUnavailable(f"MQTT seed {self.path}: {exc.strerror}") from exc
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cached
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_seed(self.path))
            self._cached = cached
        return cached[1]


def app_credentials(context: HubContext, subject: str, store: str) -> dict[str, str] | None:
    """``{"username", "password"}`` of ``subject``'s app at ``store``, or None when the hub
    has no seed (``[mqtt] seed_file`` unset: stores with secrets of their own). A seed
    that is configured but unreadable is a 503, not a silent omission."""
    path = context.settings.mqtt.seed_file
    if path is None:
        return None
    source: SeedFile = context.extras.setdefault("mqtt_seed", SeedFile(path))
    try:
        seed = source.seed()
    except SeedUnavailable as exc:
        logger.error("cannot hand out MQTT credentials: %s", exc)
        raise bad_request(503, "no_mqtt_seed") from exc
    return {"username": subject, "password": app_password(store_secret(seed, store), subject)}


# ---------------------------------------------------------------------- CLI


def _seed_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.seed_file or settings_from(args).mqtt.seed_file
    if path is None:
        raise SeedUnavailable("no seed file: set [mqtt] seed_file or pass --seed-file")
    return path


def cmd_seed_init(args: argparse.Namespace) -> int:
    try:
        path = _seed_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = base64.urlsafe_b64encode(secrets.token_bytes(SEED_BYTES)).rstrip(b"=")
        write_new(path, seed + b"\n", 0o600)
    except (SeedUnavailable, OSError) as exc:
        print(f"storeside-hub mqtt-seed-init: error: {exc}", file=sys.stderr)
        return 2
    print(f"new MQTT seed in {path} (0600); every store secret derives from it")
    return 0


def cmd_store_secret(args: argparse.Namespace) -> int:
    from hub.app import open_context

    try:
        seed = read_seed(_seed_path(args))
        secret = store_secret(seed, args.store)
        context = open_context(settings_from(args))
        try:
            with context.db.read() as conn:
                known = conn.execute("SELECT 1 FROM stores WHERE store_id = ?",
                                     (args.store,)).fetchone()
        finally:
            context.db.close()
        if not known:
            raise ValueError(f"unknown store {args.store} (storeside-hub add-store)")
    except (SeedUnavailable, ValueError) as exc:
        print(f"storeside-hub store-mqtt-secret: error: {exc}", file=sys.stderr)
        return 2
    print(secret.decode("ascii"))
    return 0


def register(sub: Any) -> None:
    init = sub.add_parser("mqtt-seed-init", help="new chain MQTT seed (store broker secrets "
                          "and app passwords derive from it); refuses to overwrite")
    add_config_argument(init)
    init.add_argument("--seed-file", type=Path, help="default: [mqtt] seed_file")
    init.set_defaults(func=cmd_seed_init)
    secret = sub.add_parser("store-mqtt-secret", help="print a store's MQTT secret (for "
                            "deploy/install.sh --mqtt-secret-file)")
    add_config_argument(secret)
    secret.add_argument("--seed-file", type=Path, help="default: [mqtt] seed_file")
    secret.add_argument("store")
    secret.set_defaults(func=cmd_store_secret)
