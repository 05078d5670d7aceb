"""The production store broker's files, rendered the same way for a device and a test.

``deploy/mosquitto/store.conf`` is a template with three placeholders: ``@LISTEN@``
(``8883`` on a device, ``<port> 127.0.0.1`` in a test), ``@CONF_DIR@`` (where the ACL,
password file and certificates live: ``/etc/mosquitto/storeside``) and ``@DATA_DIR@``
(persistence: ``/var/lib/mosquitto``). ``deploy/mosquitto/store.acl`` is copied as it
is. ``render_store_conf`` is the only code that fills the template, used by
``deploy/install.sh`` (``python -m edge.broker_config``) and by ``StoreBroker``, which
the tests start: what they prove is what ships.

Layout of ``conf_dir``::

    store.conf   rendered template          store.acl    the ACL, byte for byte
    passwd       Mosquitto password file    conf.d/      local *.conf, loaded last
    certs/ca.crt certs/server.crt certs/server.key
"""

from __future__ import annotations

import argparse
import grp
import os
import re
import secrets
import shutil
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.broker import PrivateBroker
from edge.mqtt_passwords import SERVICE_USERS, app_password, password_file
from edge.store_certs import build_store_certs, write_store_certs

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
PLACEHOLDERS = ("@LISTEN@", "@CONF_DIR@", "@DATA_DIR@")
_LISTEN = re.compile(r"^[0-9]{1,5}( [A-Za-z0-9.:_-]+)?$")
_PATH = re.compile(r"^/[A-Za-z0-9/._+-]*$")

__all__ = [
    "StoreBroker", "StoreBrokerEnv", "install_broker_files", "render_store_conf",
    "store_broker_env",
]


def render_store_conf(template: str, *, listen: str, conf_dir: str, data_dir: str) -> str:
    """Fill the placeholders; refuse values that could smuggle in another option."""
    if not _LISTEN.match(listen):
        raise ValueError(f"listen must be '<port>' or '<port> <address>', got {listen!r}")
    for name, path in (("conf_dir", conf_dir), ("data_dir", data_dir)):
        if not _PATH.match(path):
            raise ValueError(f"{name} must be an absolute path without spaces: {path!r}")
    text = (
        template.replace("@LISTEN@", listen)
        .replace("@CONF_DIR@", conf_dir.rstrip("/"))
        .replace("@DATA_DIR@", data_dir.rstrip("/"))
    )
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"unknown placeholder(s) in the template: {sorted(set(left))}")
    return text


def install_broker_files(
    conf_dir: Path,
    *,
    listen: str,
    data_dir: Path,
    runtime_conf_dir: str | None = None,
    source_dir: Path = DEPLOY_DIR,
    group: str | None = None,
) -> Path:
    """Write ``store.conf`` and ``store.acl`` into ``conf_dir`` (and an empty ``conf.d``);
    returns the config's path. ``runtime_conf_dir`` is the directory as the broker will
    see it (an installer writing into a staging root passes the final path); ``group``
    the broker's group, given read access to everything in ``conf_dir``."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "conf.d").mkdir(exist_ok=True)
    conf = conf_dir / "store.conf"
    conf.write_text(
        render_store_conf(
            (source_dir / "store.conf").read_text(),
            listen=listen,
            conf_dir=runtime_conf_dir or str(conf_dir),
            data_dir=str(data_dir),
        )
    )
    shutil.copyfile(source_dir / "store.acl", conf_dir / "store.acl")
    secure_broker_files(conf_dir, group)
    return conf


def secure_broker_files(conf_dir: Path, group: str | None) -> None:
    """Owner root (whoever runs this), group ``group`` (the broker's, ``mosquitto``):
    directories 0750, everything 0640, public certificates 0644. Mosquitto reads its
    files after dropping root, so the group is what lets it in; nobody else can read the
    password file or the server key."""
    gid = grp.getgrnam(group).gr_gid if group else -1
    paths = [conf_dir, *sorted(conf_dir.rglob("*"))]
    for path in paths:
        if path.is_dir():
            mode = 0o750
        elif path.parent.name == "certs" and path.suffix == ".crt":
            mode = 0o644
        else:
            mode = 0o640
        if gid >= 0:
            os.chown(path, -1, gid)
        os.chmod(path, mode)


def broker_group() -> str | None:
    """The group Mosquitto runs as once it drops root (``mosquitto``), when we are root;
    None otherwise (then it keeps our identity and reads our files anyway)."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam("mosquitto").gr_name
    except KeyError:
        return None


class StoreBroker(PrivateBroker):
    """Mosquitto with the shipped store config, on 127.0.0.1:<free port>, TLS only.

    Write ``certs/`` (``edge.store_certs.write_store_certs``) and the password file
    (``write_passwd``) into ``conf_dir`` before ``start``, which renders the config and
    ACL beside them with the production permissions (root:mosquitto, 0640/0750)."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port=port)
        # Mosquitto drops root before reading its files: it must be able to get in.
        os.chmod(self._dir, 0o711)
        self.conf_dir = self._dir / "etc"
        self.data_dir = self._dir / "data"
        self.conf_dir.mkdir()
        self.data_dir.mkdir()
        self._group = broker_group()
        if self._group is not None:
            shutil.chown(self.data_dir, user="mosquitto", group=self._group)

    def write_passwd(self, text: str) -> None:
        """Replace the password file (atomically); ``reload`` makes the broker use it."""
        tmp = self.conf_dir / ".passwd.tmp"
        tmp.write_text(text)
        if self._group is not None:
            shutil.chown(tmp, group=self._group)
        os.chmod(tmp, 0o640)
        os.replace(tmp, self.conf_dir / "passwd")

    @property
    def config_path(self) -> Path:
        return self.conf_dir / "store.conf"

    @property
    def ca_file(self) -> Path:
        return self.conf_dir / "certs" / "ca.crt"

    def _write_config(self) -> None:
        install_broker_files(
            self.conf_dir, listen=f"{self.port} {self.host}", data_dir=self.data_dir,
            group=self._group,
        )


@dataclass
class StoreBrokerEnv:
    """A StoreBroker and the credentials its password file was built from."""

    broker: StoreBroker
    secret: bytes
    services: dict[str, str]  # service user -> password
    subjects: list[str]

    @property
    def ca_file(self) -> str:
        return str(self.broker.ca_file)

    def password(self, user: str) -> str:
        return self.services.get(user) or app_password(self.secret, user)

    def passwords(self) -> dict[str, str]:
        return {user: self.password(user) for user in [*self.services, *self.subjects]}

    def rewrite_passwd(self) -> None:
        text, _ = password_file(self.secret, self.services, self.subjects)
        self.broker.write_passwd(text)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def store_broker_env(subjects: list[str]) -> StoreBrokerEnv:
    """A StoreBroker with test-time credentials (tests, scripts/acl_matrix): certificates
    for 127.0.0.1, random service passwords, apps ``subjects`` with passwords derived from
    a random secret. ``with env.broker`` starts it (and stops and removes it)."""
    broker = StoreBroker()
    certs = build_store_certs("s001", hostnames=["store-s001.local"], ips=["127.0.0.1"])
    write_store_certs(certs, broker.conf_dir / "certs")
    env = StoreBrokerEnv(
        broker, secrets.token_bytes(32),
        {user: secrets.token_urlsafe(24) for user in SERVICE_USERS}, subjects,
    )
    env.rewrite_passwd()
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.broker_config --conf-dir DIR ...``: the install script's renderer."""
    parser = argparse.ArgumentParser(prog="python -m edge.broker_config", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf-dir", type=Path, required=True, help="where to write")
    parser.add_argument("--runtime-conf-dir", default="/etc/mosquitto/storeside",
                        help="conf dir as the broker sees it (default %(default)s)")
    parser.add_argument("--data-dir", default="/var/lib/mosquitto")
    parser.add_argument("--listen", default="8883")
    parser.add_argument("--source-dir", type=Path, default=DEPLOY_DIR)
    parser.add_argument("--group", help="the broker's group (mosquitto); default: unchanged")
    args = parser.parse_args(argv)
    conf = install_broker_files(
        args.conf_dir, listen=args.listen, data_dir=Path(args.data_dir),
        runtime_conf_dir=args.runtime_conf_dir, source_dir=args.source_dir, group=args.group,
    )
    print(conf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
