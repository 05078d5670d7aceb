"""``storeside-edge make-certs | mqtt-passwd | mqtt-app-password``: a store broker's secrets.

* ``make-certs``: the store CA (or a chain CA given with ``--ca-cert/--ca-key``) and the
  broker's server certificate (``edge.store_certs``).
* ``mqtt-passwd``: Mosquitto's password file for the service users (one password file
  each, ``<dir>/_storeside-*.password``) and for every member in the edge's profile cache
  (password derived from the store MQTT secret, ``edge.mqtt_passwords``). The output is
  the same byte for byte for the same inputs; lines of the current file that still hold
  are kept (no PBKDF2 for them: a rebuild of 10,000 members takes a fraction of a
  second); it is only replaced when it changed, and
  ``"changed"`` in the printed summary tells the caller to reload the broker
  (``systemctl reload mosquitto`` = SIGHUP: no restart, connected clients whose password
  still holds stay connected, the others are disconnected).
* ``mqtt-app-password``: the password of one subject's app (what the app backend hands
  the app; printed, so run it where the secret lives).
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.mqtt_passwords import app_password, is_service_user, password_file
from edge.store_certs import build_store_certs, write_store_certs
from models.sqlite_db import connect_readonly

COMMANDS = ("make-certs", "mqtt-passwd", "mqtt-app-password")
MAX_ROUNDS = 5


def read_secret(path: Path) -> bytes:
    """The store MQTT secret: the file's bytes, surrounding whitespace stripped."""
    return path.read_bytes().strip()


def service_passwords(directory: Path) -> dict[str, str]:
    """``<name>.password`` files → {name: password}; only ``_``-prefixed names."""
    found = {}
    for path in sorted(directory.glob("*.password")):
        if is_service_user(path.stem):
            found[path.stem] = path.read_text().strip()
    return found


def member_subjects(db_path: Path) -> list[str]:
    """Every member in the edge's profile cache."""
    conn = connect_readonly(db_path, busy_timeout_ms=5000)
    try:
        return [row[0] for row in conn.execute("SELECT subject FROM profiles ORDER BY subject")]
    finally:
        conn.close()


def write_if_changed(path: Path, text: str, group: str | None) -> bool:
    """Atomically replace ``path`` (0640, group ``group``) unless it already holds ``text``."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if group:
        os.chown(tmp, -1, grp.getgrnam(group).gr_gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)
    return True


def _stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        st = path.stat() if path else None
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def build_passwd(args: argparse.Namespace) -> dict[str, object]:
    """One rebuild, repeated while ``--trigger-file`` changed during it (at most
    ``MAX_ROUNDS``). Why: a start of the service while it runs merges into the running
    one, so an edge's write in that window would wait for the timer. The edge writes the
    trigger after its page committed, and the trigger is looked at before the members are
    read: either this round saw the new members or the next round runs."""
    services: list[str] = []
    apps, changed = 0, False
    for _ in range(MAX_ROUNDS):
        before = _stamp(args.trigger_file)
        found = service_passwords(args.services_dir)
        services = sorted(found)
        subjects = member_subjects(args.db) if args.db else []
        previous = args.out.read_text() if args.out.exists() else ""
        text, apps = password_file(read_secret(args.secret_file), found, subjects, previous)
        changed = write_if_changed(args.out, text, args.group) or changed
        if args.trigger_file is None or _stamp(args.trigger_file) == before:
            break
    return {"services": services, "apps": apps, "changed": changed}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storeside-edge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("make-certs", help="store CA + broker server certificate")
    certs.add_argument("--store", required=True)
    certs.add_argument("--out", type=Path, required=True)
    certs.add_argument("--hostname", action="append", default=[],
                       help="the store device's host name (repeatable)")
    certs.add_argument("--ip", action="append", default=[],
                       help="an address of the device (repeatable; 127.0.0.1 is always in)")
    certs.add_argument("--ca-cert", type=Path, help="reuse this CA (with --ca-key)")
    certs.add_argument("--ca-key", type=Path)
    passwd = sub.add_parser("mqtt-passwd", help="build Mosquitto's password file")
    passwd.add_argument("--secret-file", type=Path, required=True)
    passwd.add_argument("--services-dir", type=Path, required=True,
                        help="directory of <service user>.password files")
    passwd.add_argument("--db", type=Path, help="the edge database (members' subjects)")
    passwd.add_argument("--out", type=Path, required=True)
    passwd.add_argument("--group", help="group of the output file (mosquitto)")
    passwd.add_argument("--trigger-file", type=Path,
                        help="the edge's mqtt.members_changed_file: rebuild again if it "
                        "changes meanwhile")
    app = sub.add_parser("mqtt-app-password", help="print one app's MQTT password")
    app.add_argument("--secret-file", type=Path, required=True)
    app.add_argument("subject")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "make-certs":
            if (args.ca_cert is None) != (args.ca_key is None):
                raise ValueError("--ca-cert and --ca-key go together")
            ca = (args.ca_cert.read_bytes(), args.ca_key.read_bytes()) if args.ca_cert else None
            certs = build_store_certs(args.store, hostnames=args.hostname, ips=args.ip, ca=ca)
            for path in write_store_certs(certs, args.out):
                print(path)
        elif args.command == "mqtt-passwd":
            print(json.dumps(build_passwd(args)))
        else:
            print(app_password(read_secret(args.secret_file), args.subject))
    except (OSError, ValueError) as exc:
        print(f"storeside-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0
