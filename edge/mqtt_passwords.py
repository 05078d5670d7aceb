"""MQTT credentials of a store broker: who may log in, with which password. Pure.

Two kinds of users (deploy/mosquitto/store.acl says what each may do):

* **services** (the edge, the POS gateway, the staff gateway): names start with ``_``,
  which no customer subject can (``SUBJECT_PATTERN`` starts with a letter or digit), so
  a service name never collides with an app's. Each has a random password in a file of
  its own (``/etc/storeside/mqtt/<name>.password``), read only by whoever needs it.
* **apps**: the username is the customer's pseudonymous subject and the password is
  derived, ``base64url(HMAC-SHA256(store MQTT secret, "storeside-mqtt-app:v1:" +
  subject))`` without padding. Whoever holds the store's secret (the edge device, and
  the app backend that hands an app its password) computes it; nothing per app is
  stored or shipped. Rotating the secret changes every app password at once.

The store secret itself is either random (a standalone store: ``deploy/install.sh`` makes
one) or derived by the chain's hub, ``store_secret(seed, store)`` =
``base64url(HMAC-SHA256(seed, "storeside-mqtt-store:" + store))``, so the hub can hand an
app its password for the store it stands at (``POST /v1/tokens/checkin``). Whoever holds
the seed can derive every store's app passwords; a store's secret gives only that store's
(HMAC: the seed cannot be recovered from it, nor another store's secret).

Mosquitto's password file (``mosquitto_passwd`` format ``$7$``): one line
``user:$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>`` (101 iterations, 12-byte
salt, 64-byte hash: what mosquitto_passwd 2.0 writes). The salt is derived from the
store secret, the user and the password instead of drawn at random, so the same inputs
give the same file byte for byte: a periodic rebuild can tell "nothing changed" and
skip the broker reload. (A salt only has to differ between users and passwords, and it
still does.) It also makes a rebuild cheap: a line of the previous file whose salt is the
one these inputs derive was made from the same secret, user and password (the salt is an
HMAC of them), so it is kept instead of running PBKDF2 again; only new or changed users
cost a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Final

from edge.messages import SUBJECT_PATTERN

ITERATIONS: Final = 101  # mosquitto_passwd 2.0's default for $7$
SALT_BYTES: Final = 12
SERVICE_PATTERN: Final = r"^_[a-z0-9][a-z0-9_-]{1,62}$"
SERVICE_USERS: Final = ("_storeside-edge", "_storeside-pos", "_storeside-staff")
MIN_SECRET_BYTES: Final = 16
_APP_CONTEXT: Final = b"storeside-mqtt-app:v1:"
_SALT_CONTEXT: Final = b"storeside-mqtt-salt:v1:"
_STORE_CONTEXT: Final = b"storeside-mqtt-store:"
STORE_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # store ids (hub.stores, install.sh)
_STORE = re.compile(STORE_PATTERN)
_SUBJECT = re.compile(SUBJECT_PATTERN)
_SERVICE = re.compile(SERVICE_PATTERN)

__all__ = [
    "SERVICE_USERS", "app_password", "hash_password", "is_service_user", "password_file",
    "store_secret", "verify_line",
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_service_user(name: str) -> bool:
    return bool(_SERVICE.match(name))


def check_secret(secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the store MQTT secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def store_secret(seed: bytes, store: str) -> bytes:
    """The MQTT secret of ``store`` derived from the chain's seed (hub ``[mqtt] seed_file``):
    ASCII (base64url, 43 characters), the same form as a generated secret file holds."""
    if not _STORE.match(store):
        raise ValueError(f"not a store id ({STORE_PATTERN})")
    mac = hmac.new(check_secret(seed), _STORE_CONTEXT + store.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")


def app_password(secret: bytes, subject: str) -> str:
    """The MQTT password of the app of ``subject`` at the store holding ``secret``."""
    if not _SUBJECT.match(subject):
        raise ValueError("not a subject (edge.messages.SUBJECT_PATTERN)")
    mac = hmac.new(check_secret(secret), _APP_CONTEXT + subject.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def hash_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash Mosquitto 2.0 checks a password against."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def _salt(secret: bytes, user: str, password: str) -> bytes:
    mac = hmac.new(secret, _SALT_CONTEXT + user.encode() + b"\0" + password.encode(),
                   hashlib.sha256)
    return mac.digest()[:SALT_BYTES]


def _parse_file(text: str) -> dict[str, str]:
    """``{user: $7$ hash}`` of a password file (lines without a ``:`` are skipped)."""
    found = {}
    for line in text.splitlines():
        user, sep, hashed = line.partition(":")
        if sep:
            found[user] = hashed
    return found


def _hashed(secret: bytes, user: str, password: str, previous: Mapping[str, str]) -> str:
    salt = _salt(secret, user, password)
    old = previous.get(user, "")
    if old.startswith(f"$7${ITERATIONS}${_b64(salt)}$"):
        return old  # same secret, user and password: the hash PBKDF2 would give again
    return hash_password(password, salt)


def password_file(
    secret: bytes, services: Mapping[str, str], subjects: Iterable[str], previous: str = ""
) -> tuple[str, int]:
    """The whole password file: every service user with its password, then every app
    subject with its derived password, sorted; returns (text, number of apps).

    ``previous``: the file as it is now (ours, root-owned); its lines still valid for these
    inputs are kept, so a rebuild of 10,000 members costs two HMACs each, not a PBKDF2.
    Refuses a service name that is not ``_...`` and a subject that does not match the
    subject pattern, so a typo cannot produce a user the ACL would misread.
    """
    check_secret(secret)
    old = _parse_file(previous)
    lines: dict[str, str] = {}
    for name, password in services.items():
        if not is_service_user(name):
            raise ValueError(f"service user {name!r} must match {SERVICE_PATTERN}")
        if len(password) < 16:
            raise ValueError(f"the password of {name} is shorter than 16 characters")
        lines[name] = _hashed(secret, name, password, old)
    apps = 0
    for subject in subjects:
        if subject in lines:
            continue
        password = app_password(secret, subject)  # ValueError on a non-subject
        lines[subject] = _hashed(secret, subject, password, old)
        apps += 1
    text = "".join(f"{user}:{lines[user]}\n" for user in sorted(lines))
    return text, apps


def verify_line(line: str, password: str) -> bool:
    """Whether ``password`` matches one ``user:$7$...`` line (tests, diagnostics)."""
    _, _, hashed = line.strip().partition(":")
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    return hmac.compare_digest(hash_password(password, salt, int(parts[2])), hashed)
